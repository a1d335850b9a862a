"""E-mail through the operator's SMTP server (smtplib): one ``Mailer`` made from the cloud's ``--smtp-*``
settings, shared by everything that e-mails a person (a customer's sign-in code, an operator's alert)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from cloud.core.secrets import read_secret
from cloud.core.settings import Settings


class MailError(Exception):
    """The message could not be handed to the SMTP server (the text says why, never the password)."""


class Mailer:
    """Hands messages to the SMTP server: STARTTLS (port 587), TLS from the start (465), or plain (``none``:
    a relay on this host only)."""

    def __init__(self, host: str, port: int, security: str, sender: str, user: str = "", password: str = "",
                 timeout: float = 10.0):
        self.host, self.port, self.security, self.sender = host, port, security, sender
        self.user, self._password, self.timeout = user, password, timeout

    @classmethod
    def from_settings(cls, s: Settings) -> "Mailer | None":
        """The cloud's mailer, its password file read now; None when no ``--smtp-host`` is set."""
        if not s.smtp_host:
            return None
        password = read_secret("--smtp-password-file", s.smtp_password_file) if s.smtp_user else ""
        return cls(s.smtp_host, s.smtp_port, s.smtp_security, s.smtp_from, s.smtp_user, password, s.smtp_timeout_s)

    def __repr__(self) -> str:  # never the password
        return f"Mailer({self.host}:{self.port}, {self.security}, user={self.user!r})"

    def send(self, to: str, subject: str, text: str) -> None:
        """Send one plain-text message to ``to``, or raise MailError (a refused recipient included)."""
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, to, subject
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
        except smtplib.SMTPRecipientsRefused as e:
            code, reply = next(iter(e.recipients.values()))
            raise MailError(f"SMTP {self.host}:{self.port} refused {to}: {code} "
                            f"{reply.decode('utf-8', 'replace') if isinstance(reply, bytes) else reply}") from None
        except (OSError, smtplib.SMTPException) as e:
            # smtplib's errors carry the server's reply, not the password.
            raise MailError(f"SMTP {self.host}:{self.port}: {type(e).__name__}: {e}") from None
