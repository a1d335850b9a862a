"""Sign-in codes by e-mail, through an SMTP server (smtplib): to customers who gave an address."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from cloud.core.settings import Settings
from cloud.core.secrets import read_secret
from cloud.people.senders.base import Sender, SendError


class SmtpSender(Sender):
    """Hands a message to the operator's SMTP server: STARTTLS (port 587), TLS from the start (465), or
    plain (``none``: a relay on this host only)."""

    name = "email"

    def __init__(self, host: str, port: int, security: str, sender: str, user: str = "", password: str = "",
                 timeout: float = 10.0):
        self.host, self.port, self.security, self.sender = host, port, security, sender
        self.user, self._password, self.timeout = user, password, timeout

    @classmethod
    def from_settings(cls, s: Settings) -> "SmtpSender | None":
        if not s.smtp_host:
            return None
        password = read_secret("--smtp-password-file", s.smtp_password_file) if s.smtp_user else ""
        return cls(s.smtp_host, s.smtp_port, s.smtp_security, s.smtp_from, s.smtp_user, password, s.smtp_timeout_s)

    def __repr__(self) -> str:  # never the password
        return f"SmtpSender({self.host}:{self.port}, {self.security}, user={self.user!r})"

    def reaches(self, customer) -> bool:
        return bool(getattr(customer, "email", None))

    def send(self, customer, subject: str, text: str) -> None:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, customer.email, subject
        message.set_content(text)
        try:
            if self.security == "tls":
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                        context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if self.user:
                    smtp.login(self.user, self._password)
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as e:
            # smtplib's errors carry the server's reply, not the password.
            raise SendError(f"SMTP {self.host}:{self.port}: {type(e).__name__}: {e}") from None
