"""The production Mosquitto's files, made by the cloud: configuration, password file, ACL and TLS files.

The cloud owns the list of machines, so it writes what the broker needs to know about them into one folder
(``--broker-files``, e.g. /var/lib/vend-broker) that Mosquitto reads, and then asks Mosquitto to reload:
by SIGHUP when it knows the broker's pid file, and always by rewriting ``reload-request``, which
``systemd/vend-broker-reload.path`` watches to run ``systemctl reload mosquitto``.

Every file is rewritten whole from the database (temp file, fsync, rename) under a lock, so two cloud
processes never interleave their writes and Mosquitto never reads half a file.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import secrets
import signal
from dataclasses import dataclass

from protocol import topics

log = logging.getLogger(__name__)

CLOUD_USER = "vend_cloud"  # "_" is not allowed in a machine id, so no machine certificate can take this name
HASH_ITERATIONS = 101  # what mosquitto_passwd 2.0 uses for its $7$ (PBKDF2-SHA512) hashes
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,47}\Z")
CONFIG, PASSWD, CLOUD_PASSWD, ACL, CA, SERVER_CERT, SERVER_KEY = (
    "mosquitto.conf", "passwd", "passwd-cloud", "acl", "ca.crt", "server.crt", "server.key")
RELOAD_REQUEST = "reload-request"
# The bound on each client's queue of QoS 1 messages, in payload bytes (the reasoning is in config_text).
QUEUED_BYTES = 128 << 20
QUEUED_MESSAGES = 1_000_000


def password_username(machine_id: str, generation: int) -> str:
    """A machine's broker user for one generation of its password; a rotation makes the next one.

    Mosquitto's password file holds one password per user, so the old and the new password can both work
    during a rotation's overlap only under two names: ``m1.1`` and then ``m1.2``. A machine that uses a
    certificate instead connects as its bare id (the certificate's CN).
    """
    return f"{topics.check_machine_id(machine_id)}.{int(generation)}"


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """The ``$7$`` hash that mosquitto_passwd writes: PBKDF2-HMAC-SHA512, 101 rounds, 12-byte salt."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, HASH_ITERATIONS, 64)
    return f"$7${HASH_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


@dataclass(frozen=True)
class BrokerUser:
    """One line of the password file: a machine's (or the cloud's, machine_id None) user and password."""

    username: str
    password: str
    machine_id: str | None

    def __post_init__(self):
        # A newline or a colon in a name would write a line of its own into the password file or the ACL.
        if not USERNAME_RE.match(self.username):
            raise ValueError(f"broker user name {self.username!r} is not valid")
        if self.machine_id is not None:
            topics.check_machine_id(self.machine_id)


def passwd_text(users: list[BrokerUser]) -> str:
    """Mosquitto's password file for these users."""
    return "".join(f"{u.username}:{mosquitto_hash(u.password)}\n" for u in users)


def acl_text(users: list[BrokerUser], machine_ids: list[str]) -> str:
    """The ACL: the cloud reads and writes the whole tree; a machine writes its reports and reads what is
    said to it, under its own id only. ``machine_ids`` also get a block for their certificate identity."""
    lines = ["# Written by vend-cloud from its machines table; rewritten on every change, do not edit.",
             "", f"user {CLOUD_USER}", f"topic readwrite {topics.PREFIX}/#"]
    names = [(u.username, u.machine_id) for u in users if u.machine_id is not None]
    names += [(machine_id, machine_id) for machine_id in machine_ids]
    for username, machine_id in sorted(set(names)):
        lines += ["", f"user {username}"]
        lines += [f"topic write {topics.PREFIX}/{machine_id}/{kind}" for kind in topics.MACHINE_PUBLISHES]
        lines += [f"topic read {topics.PREFIX}/{machine_id}/{kind}" for kind in topics.MACHINE_READS]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Ports:
    """The three listeners: the cloud's on the loopback, machines with a password, machines with a certificate."""

    local: int = 1883
    password: int = 8883
    certificate: int = 8884

    @classmethod
    def parse(cls, text: str) -> "Ports":
        """Ports from "LOCAL,PASSWORD,CERTIFICATE"; ValueError naming what is wrong."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 3 or not all(p.isdigit() and 0 < int(p) < 65536 for p in parts) or len(set(parts)) != 3:
            raise ValueError(f"broker ports {text!r}: give three different ports LOCAL,PASSWORD,CERTIFICATE "
                             "like 1883,8883,8884")
        return cls(*(int(p) for p in parts))


def config_text(folder: str, ports: Ports) -> str:
    """The Mosquitto configuration for the fleet (include it from /etc/mosquitto/conf.d/)."""
    folder = os.path.abspath(folder)
    tls = (f"cafile {folder}/{CA}\ncertfile {folder}/{SERVER_CERT}\nkeyfile {folder}/{SERVER_KEY}\n"
           "tls_version tlsv1.2\n")
    return f"""\
# The vending fleet's Mosquitto settings, written by vend-cloud at every start (edits are overwritten).
# Link it into /etc/mosquitto/conf.d/; Debian's mosquitto.conf keeps its pid file, log and persistence
# location.

# Each listener has its own logins: the cloud's all-topics user is in {CLOUD_PASSWD}, read only by the
# loopback listener, so its password is useless from outside even if it leaks; machines are in {PASSWD},
# read only by the machine listeners. The ACL is the same file everywhere.
per_listener_settings true

# Queues are bounded. Every QoS 1 message a machine sends the cloud is either retained (status), or kept in
# the machine's ledger and resent from its acknowledged mark (after [mqtt] resend_after_s, then less and less
# often) until the cloud acknowledges it (events), or a reading that the next one replaces (telemetry): a message dropped here
# costs a resend, never a sale. What the bound is for is the cloud's persistent session during an outage:
# a fleet of 1,000 machines sends about 30 KB of status and events per machine and hour (a status every
# 30 s, some 30 events), so {QUEUED_BYTES >> 20} MiB holds about 4 hours of it; the resent copies of a
# machine's unacknowledged window fill it sooner, and once it is full the broker drops new messages
# (without an error) instead of growing until the server runs out of memory. The message count bounds
# Mosquitto's own bookkeeping, a few hundred bytes a message beyond the payload. Mosquitto's default
# (1000 messages) silently dropped bursts to a connected but busy cloud, hence these larger figures.
max_queued_messages {QUEUED_MESSAGES}
max_queued_bytes {QUEUED_BYTES}
# QoS 1 messages in flight to one client before it must acknowledge them (Mosquitto's default).
max_inflight_messages 20
# Four times the largest valid message (256 KiB): a bigger packet is an attack or a bug, and is refused
# before it is read into memory.
max_packet_size 1048576

# Keep sessions, retained status and queued commands across a broker restart; a machine offline for two
# weeks loses its session, and its unacknowledged events come back through its own resend.
persistence true
autosave_interval 60
persistent_client_expiration 14d
# A vend command is one small packet: send it now rather than wait to fill a segment.
set_tcp_nodelay true

# The cloud on this host: the loopback only, so plain MQTT is enough; only the cloud's login works here.
listener {ports.local} 127.0.0.1
allow_anonymous false
password_file {folder}/{CLOUD_PASSWD}
acl_file {folder}/{ACL}

# Machines with a user name and password, over TLS with the fleet CA's server certificate. The client id
# is replaced by the user name, so no login can take another client's id (the cloud's, or another
# machine's) and have the broker close that client's connection.
listener {ports.password}
allow_anonymous false
password_file {folder}/{PASSWD}
acl_file {folder}/{ACL}
use_username_as_clientid true
{tls}
# Machines with their own certificate from the fleet CA. The certificate's CN (the machine id) is the user
# name, so the ACL applies to it, and the client id; no password is asked for or accepted.
listener {ports.certificate}
allow_anonymous false
acl_file {folder}/{ACL}
use_username_as_clientid true
{tls}require_certificate true
use_identity_as_username true
"""


def write_atomically(path: str, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` in one rename, so a reader sees the old file or the new one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have taken bits off
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class BrokerFiles:
    """The folder Mosquitto reads; files readable by its group (the folder's, through the setgid bit)."""

    def __init__(self, folder: str, ports: Ports = Ports(), pid_file: str = ""):
        self.folder = os.path.abspath(folder)
        self.ports = ports
        self.pid_file = pid_file

    def path(self, name: str) -> str:
        """A file in the broker's folder."""
        return os.path.join(self.folder, name)

    def write_config(self) -> None:
        """Write the Mosquitto configuration (at every cloud start, so it follows the cloud's settings)."""
        os.makedirs(self.folder, exist_ok=True)
        with self._lock():
            write_atomically(self.path(CONFIG), config_text(self.folder, self.ports).encode(), 0o644)

    def write_tls(self, ca, names: list[str]) -> None:
        """Put the fleet CA's certificate and a server certificate for ``names`` where Mosquitto reads them;
        the server certificate is made again only when the names change or its end is near."""
        os.makedirs(self.folder, exist_ok=True)
        with self._lock():
            write_atomically(self.path(CA), ca.cert_pem.encode(), 0o644)
            if not ca.server_cert_current(self.path(SERVER_CERT), names):
                cert, key = ca.issue_server(names)
                write_atomically(self.path(SERVER_KEY), key.encode(), 0o640)
                write_atomically(self.path(SERVER_CERT), cert.encode(), 0o644)

    def write_users(self, source) -> str:
        """Rewrite the password file and the ACL from ``source()`` -> (users, machine ids), then ask Mosquitto to
        reload; returns what was done. ``source`` is read under the lock, so the last file written is made
        from the newest state even when two cloud processes change machines at once."""
        os.makedirs(self.folder, exist_ok=True)
        with self._lock():
            users, machine_ids = source()
            write_atomically(self.path(PASSWD), passwd_text([u for u in users if u.machine_id]).encode(), 0o640)
            write_atomically(self.path(CLOUD_PASSWD), passwd_text([u for u in users if not u.machine_id]).encode(),
                             0o640)
            write_atomically(self.path(ACL), acl_text(users, machine_ids).encode(), 0o640)
            return self.reload()

    def reload(self) -> str:
        """Tell Mosquitto to read its password file and ACL again (which also drops users no longer there)."""
        write_atomically(self.path(RELOAD_REQUEST), f"{secrets.token_hex(8)}\n".encode(), 0o644)
        if not self.pid_file:
            return "reload requested (vend-broker-reload.path)"
        try:
            with open(self.pid_file) as f:
                pid = int(f.read().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as e:
            log.error("could not signal Mosquitto (pid file %s): %s", self.pid_file, e)
            return f"Mosquitto NOT reloaded: pid file {self.pid_file}: {e}"
        return f"Mosquitto (pid {pid}) reloaded"

    def _lock(self):
        return _FileLock(self.path(".lock"))


class _FileLock:
    """An exclusive flock on a file: one cloud process at a time rewrites the broker's files."""

    def __init__(self, path: str):
        self.path = path
        self.fd = -1

    def __enter__(self):
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
