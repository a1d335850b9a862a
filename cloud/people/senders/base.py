"""What every way of sending a sign-in code has: a name, whom it can reach, and ``send``."""

from __future__ import annotations


class SendError(Exception):
    """The code could not be handed over (the message says why, never a secret)."""


class Sender:
    """Sends a short text to a customer: by text message to their phone, or by e-mail."""

    name = ""

    def reaches(self, customer) -> bool:
        """Whether this customer has an address this sender can use."""
        raise NotImplementedError

    def send(self, customer, subject: str, text: str) -> None:
        """Hand the text over for delivery, or raise SendError."""
        raise NotImplementedError
