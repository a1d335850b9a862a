"""The fleet's small certificate authority: the broker's server certificate and one client certificate per machine.

The CA's key never leaves the cloud's own folder (mode 0700, key 0600). A machine's certificate names the
machine id as its CN; the broker, with ``use_identity_as_username``, takes that CN as the user the ACL
speaks of. Keys are ECDSA P-256: small, quick on a Pi, understood by OpenSSL, Mosquitto and Python's ssl.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud.provisioning.brokerfiles import write_atomically

CA_DAYS = 20 * 365
SERVER_DAYS = 3 * 365
CLIENT_DAYS = 10 * 365  # a machine keeps its card for years; a new card gets a new certificate
RENEW_BEFORE = timedelta(days=60)
# Certificates start a day early: a Pi without a real-time clock may run a little behind until NTP syncs.
BACKDATE = timedelta(days=1)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class FleetCA:
    """The CA kept in ``folder``: ``ca.key`` and ``ca.crt``, made on first use."""

    def __init__(self, folder: str):
        self.folder = folder
        self.key_path = os.path.join(folder, "ca.key")
        self.cert_path = os.path.join(folder, "ca.crt")
        self._key = None
        self._cert = None

    def ensure(self) -> "FleetCA":
        """Load the CA, creating it (key and self-signed certificate) the first time."""
        if not os.path.exists(self.key_path):
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vend fleet"),
                              x509.NameAttribute(NameOID.COMMON_NAME, f"vend fleet CA {os.urandom(4).hex()}")])
            now = datetime.now(timezone.utc)
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - BACKDATE).not_valid_after(now + timedelta(days=CA_DAYS))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                    .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                   critical=True)
                    .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                    .sign(key, hashes.SHA256()))
            # The certificate first: a key without its certificate would make a second CA on the next start.
            write_atomically(self.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
            write_atomically(self.key_path, _key_pem(key), 0o600)
        with open(self.key_path, "rb") as f:
            self._key = serialization.load_pem_private_key(f.read(), None)
        with open(self.cert_path, "rb") as f:
            self._cert = x509.load_pem_x509_certificate(f.read())
        return self

    @property
    def cert_pem(self) -> str:
        """The CA's certificate, what machines and the broker trust."""
        return self._cert.public_bytes(serialization.Encoding.PEM).decode()

    def _issue(self, common_name: str, usage, days: int, names: list[str] = ()) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(timezone.utc)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .issuer_name(self._cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - BACKDATE).not_valid_after(now + timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                                  critical=False))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                                            critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key).decode()

    def issue_client(self, machine_id: str) -> tuple[str, str]:
        """A machine's certificate and key (PEM); its CN is the machine id."""
        return self._issue(machine_id, ExtendedKeyUsageOID.CLIENT_AUTH, CLIENT_DAYS)

    def issue_server(self, names: list[str]) -> tuple[str, str]:
        """The broker's certificate for the host names and addresses machines and the cloud use."""
        return self._issue(names[0], ExtendedKeyUsageOID.SERVER_AUTH, SERVER_DAYS, names)

    def server_cert_current(self, cert_path: str, names: list[str]) -> bool:
        """Whether the certificate at ``cert_path`` is ours, names exactly ``names`` and is not near its end."""
        try:
            with open(cert_path, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (OSError, ValueError, x509.ExtensionNotFound):
            return False
        return (cert.issuer == self._cert.subject
                and sorted(str(n.value) for n in san) == sorted(str(_general_name(n).value) for n in names)
                and cert.not_valid_after_utc - datetime.now(timezone.utc) > RENEW_BEFORE)


def _general_name(name: str):
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
