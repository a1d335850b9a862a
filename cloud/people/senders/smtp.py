"""Sign-in codes by e-mail, through the cloud's SMTP server (``cloud/core/mail.py``): to customers who gave
an address."""

from __future__ import annotations

from cloud.core.mail import Mailer, MailError
from cloud.core.settings import Settings
from cloud.people.senders.base import Sender, SendError


class SmtpSender(Sender):
    """E-mails a code to a customer through the cloud's ``Mailer``."""

    name = "email"

    def __init__(self, mailer: Mailer):
        self.mailer = mailer

    @classmethod
    def from_settings(cls, s: Settings) -> "SmtpSender | None":
        mailer = Mailer.from_settings(s)
        return cls(mailer) if mailer is not None else None

    def __repr__(self) -> str:  # never the password
        return f"SmtpSender({self.mailer.host}:{self.mailer.port}, {self.mailer.security}, user={self.mailer.user!r})"

    def reaches(self, customer) -> bool:
        return bool(getattr(customer, "email", None))

    def send(self, customer, subject: str, text: str) -> None:
        try:
            self.mailer.send(customer.email, subject, text)
        except MailError as e:
            raise SendError(str(e)) from None
