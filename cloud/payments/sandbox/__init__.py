"""The sandbox payment provider, a package of its own: the provider as the cloud sees it (``provider.py``),
its stand-in server (``server.py``, run as ``python -m cloud.payments.sandbox``), and ``PROVIDER``, what
it declares to the registry (``cloud/payments/registry.py``): its settings, its journal boundary account,
its signed webhook and what reconciliation asks of it.
"""

from __future__ import annotations

import time

from cloud.payments import webhook
from cloud.payments.registry import ProviderSpec
from cloud.payments.sandbox.provider import (BOUNDARY, FINAL, NAME, Reply, Sandbox, SandboxClient, Unreachable, ops, outcome_of, reported, request_of)

__all__ = ["BOUNDARY", "FINAL", "NAME", "PROVIDER", "Reply", "Sandbox", "SandboxClient", "Unreachable", "ops",
           "outcome_of", "reported", "request_of"]

# Its settings (cloud/core/settings.py: the --sandbox-* options, checked by Settings.check_sandbox).
SETTINGS = ("sandbox_url", "sandbox_secret", "sandbox_timeout_s", "sandbox_retries", "sandbox_tolerance_s",
            "sandbox_confirm_timeout_s")


def build(settings=None, counts=None) -> Sandbox:
    """The sandbox as ``settings`` configure it; without a ``--sandbox-url``, one that only queues (for the
    orders placed while it was configured: their captures and voids wait until it is again)."""
    if settings is None or not settings.sandbox_url:
        return Sandbox(None)
    client = SandboxClient(settings.sandbox_url, settings.sandbox_timeout_s, settings.sandbox_retries)
    return Sandbox(client, settings.sandbox_confirm_timeout_s, counts)


def offered(settings) -> bool:
    """New customers and orders may pay by the sandbox only when a ``--sandbox-url`` is set."""
    return settings is not None and bool(settings.sandbox_url)


def verify(settings, headers, body: bytes) -> webhook.Event:
    """The sandbox's signed notification, checked (HMAC-SHA256 under ``--sandbox-secret``, no older than
    ``--sandbox-tolerance``) and read; raises ``webhook.WebhookRefused``."""
    webhook.verify(settings.sandbox_secret.encode(), headers.get(webhook.TIMESTAMP_HEADER),
                   headers.get(webhook.SIGNATURE_HEADER), body, time.time(), settings.sandbox_tolerance_s)
    return webhook.parse(body)


PROVIDER = ProviderSpec(name=NAME, boundary=BOUNDARY, build=build, offered=offered, settings=SETTINGS,
                        webhook=verify, reported=reported, missing="--sandbox-url",
                        label="Sandbox pay (an external provider that confirms by itself)")
