"""Ways to send a customer their one-time sign-in code, registered by name: each declares its settings and
is made from them, or is not configured. With none configured, codes cannot be sent and the sign-in page
says to ask the operator."""

from __future__ import annotations

from cloud.core.settings import Settings
from cloud.core.secrets import read_secret
from cloud.people.senders.base import Sender, SendError
from cloud.people.senders.smtp import SmtpSender
from cloud.people.senders.sms import SmsGateway

# In the order they are tried: a text message reaches every customer, an e-mail only those who gave one.
REGISTRY = {SmsGateway.name: SmsGateway.from_settings, SmtpSender.name: SmtpSender.from_settings}


def configured(settings: Settings) -> list[Sender]:
    """The senders this cloud's settings configure (their secret files read and checked now, once)."""
    return [sender for make in REGISTRY.values() if (sender := make(settings)) is not None]


__all__ = ["REGISTRY", "Sender", "SendError", "SmsGateway", "SmtpSender", "configured"]
