"""Sign-in codes by text message, through an HTTP gateway: one JSON POST with a bearer token.

The body is ``{"to": "+8613800000001", "text": "..."}`` and any 2xx answer means the gateway took it.
docs/pages.md says which gateways take that as it is and which need a small adapter in front.
"""

from __future__ import annotations

import httpx

from cloud.core.settings import Settings
from cloud.core.secrets import read_secret
from cloud.people.senders.base import Sender, SendError


class SmsGateway(Sender):
    """Posts each message to the configured gateway URL."""

    name = "sms"

    def __init__(self, url: str, token: str, timeout: float = 10.0):
        self.url, self._token, self.timeout = url, token, timeout

    @classmethod
    def from_settings(cls, s: Settings) -> "SmsGateway | None":
        if not s.sms_url:
            return None
        return cls(s.sms_url, read_secret("--sms-token-file", s.sms_token_file), s.sms_timeout_s)

    def __repr__(self) -> str:  # never the token
        return f"SmsGateway({self.url})"

    def reaches(self, customer) -> bool:
        return bool(customer.phone)

    def send(self, customer, subject: str, text: str) -> None:
        try:
            r = httpx.post(self.url, json={"to": customer.phone, "text": text}, timeout=self.timeout,
                           headers={"Authorization": f"Bearer {self._token}"})
        except httpx.HTTPError as e:
            raise SendError(f"SMS gateway {self.url}: {type(e).__name__}") from None
        if not r.is_success:
            raise SendError(f"SMS gateway {self.url}: answered {r.status_code}")
