"""The MQTT topic tree: everything lives under ``vend/v1/{machine_id}/``."""

import re

from . import ProtocolError

PREFIX = "vend/v1"
MACHINE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}\Z")  # \Z: "$" would accept a trailing newline

# kind -> (QoS, retained). Telemetry is QoS 0: nothing that money depends on travels there.
KINDS = {
    "status": (1, True),
    "events": (1, False),
    "ack": (1, False),
    "cmd": (1, False),
    "cmd/result": (1, False),
    "telemetry": (0, False),
    # The cloud's settings for one machine (credentials after a rotation, later the planogram). Retained:
    # it is state, and a machine that was offline when it changed still finds the newest one.
    "config": (1, True),
}

# Who may publish what: the broker's ACL is made from these, so a machine can write only its own reports
# and read only what the cloud says to it.
MACHINE_PUBLISHES = ("status", "events", "cmd/result", "telemetry")
MACHINE_READS = ("ack", "cmd", "config")


def check_machine_id(machine_id: str) -> str:
    """Return the id if it is a valid machine id, else raise ProtocolError naming it."""
    if not isinstance(machine_id, str) or not MACHINE_ID_RE.match(machine_id):
        raise ProtocolError(
            f"machine id {machine_id!r} is not valid: use 1-32 of a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    return machine_id


def topic(machine_id: str, kind: str) -> str:
    """The topic of one message kind for one machine."""
    if kind not in KINDS:
        raise ProtocolError(f"unknown topic kind {kind!r}")
    return f"{PREFIX}/{check_machine_id(machine_id)}/{kind}"


def subscription(kind: str, shared_group: str | None = None) -> str:
    """The wildcard filter for one kind across the fleet, optionally as an MQTT 5 shared subscription."""
    if kind not in KINDS:
        raise ProtocolError(f"unknown topic kind {kind!r}")
    flt = f"{PREFIX}/+/{kind}"
    return f"$share/{shared_group}/{flt}" if shared_group else flt


def parse(topic_name: str) -> tuple[str, str]:
    """Split a topic into (machine_id, kind); raise ProtocolError if it is not ours."""
    prefix = PREFIX + "/"
    if not topic_name.startswith(prefix):
        raise ProtocolError(f"topic {topic_name!r} is not under {PREFIX}/")
    machine_id, _, kind = topic_name[len(prefix):].partition("/")
    check_machine_id(machine_id)
    if kind not in KINDS:
        raise ProtocolError(f"topic {topic_name!r} has unknown kind {kind!r}")
    return machine_id, kind
