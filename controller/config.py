"""The controller's INI config: every key typed, bounded and known, read once at start.

The schema below is also the list of defaults. An unknown section or key, a value of the wrong type or out
of bounds, or a missing required key is a ConfigError that names the file, the section and the key.
"""

from __future__ import annotations

import configparser
import math
import re
from dataclasses import dataclass
from typing import Any

from protocol.messages import SLOT_RE
from protocol.topics import MACHINE_ID_RE

DEFAULT_PATH = "/etc/vend/controller.ini"
REQUIRED = object()


class ConfigError(ValueError):
    """A config file that cannot be used as it is; the text names the file and the key."""


@dataclass(frozen=True)
class Key:
    kind: str  # str, int, float, bool, list, choice
    default: Any = REQUIRED
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    pattern: re.Pattern | None = None
    what: str = ""


SLOT_LIST = Key("list", (), pattern=SLOT_RE, what="slot codes like A1, B12")

SCHEMA: dict[str, dict[str, Key]] = {
    "machine": {
        "id": Key("str", pattern=MACHINE_ID_RE, what="1-32 of a-z, 0-9 and '-'"),
        "name": Key("str", ""),
        "secret": Key("str", lo=16, hi=256, what="the machine's QR secret, at least 16 characters"),
    },
    "cloud": {
        "url": Key("str", pattern=re.compile(r"^https?://[^\s/]+(/[^\s]*)?$"), what="http(s)://host[:port]"),
    },
    "mqtt": {
        "host": Key("str", "localhost"),
        "port": Key("int", 1883, 1, 65535),
        "protocol": Key("choice", "5", choices=("5", "3.1.1")),
        "username": Key("str", ""),
        "password": Key("str", ""),
        "tls": Key("bool", False),
        "ca_file": Key("str", ""),
        "keepalive_s": Key("int", 30, 5, 600),
        "batch_size": Key("int", 200, 1, 1000),
        "window": Key("int", 8, 1, 100),
        "resend_after_s": Key("float", 10.0, 1.0, 600.0),
    },
    "ledger": {
        "path": Key("str", "/var/lib/vend/ledger.db"),
    },
    "vend": {
        "drop_timeout_s": Key("float", 3.0, 0.1, 60.0),
        "turns": Key("int", 2, 1, 3),
    },
    "screen": {
        "rotate_s": Key("float", 5.0, 1.0, 300.0),
        "url_file": Key("str", ""),  # also write the QR's URL here, for a demo or a test to read
    },
    "hardware": {
        "backend": Key("choice", choices=("sim", "gpio", "serial")),
        "slots": Key("list", pattern=SLOT_RE, what="slot codes like A1, B12"),
    },
    "sim": {
        "drop_delay_s": Key("float", 0.3, 0.0, 30.0),
        "jam": SLOT_LIST,
        "empty": SLOT_LIST,
        "double": SLOT_LIST,
        "display_path": Key("str", "/run/vend/screen.png"),
        "trace_path": Key("str", ""),  # append the time of every motor start here (benchmarks)
    },
    "service": {
        "socket": Key("str", "/run/vend/control.sock"),
    },
}


def _convert(key: Key, raw: str, where: str) -> Any:
    raw = raw.strip()
    if key.kind == "str":
        value = raw
        if key.lo is not None and len(value) < key.lo:
            raise ConfigError(f"{where}: too short ({len(value)} characters); expected {key.what}")
        if key.hi is not None and len(value) > key.hi:
            raise ConfigError(f"{where}: too long ({len(value)} characters, at most {int(key.hi)})")
        if key.pattern is not None and not key.pattern.match(value):
            raise ConfigError(f"{where}: {value!r} is not valid; expected {key.what}")
        return value
    if key.kind in ("int", "float"):
        try:
            if "_" in raw:
                raise ValueError(raw)
            value = int(raw) if key.kind == "int" else float(raw)
            if not math.isfinite(value):  # nan passes every bounds check by failing every comparison
                raise ValueError(raw)
        except ValueError:
            raise ConfigError(f"{where}: {raw!r} is not {'an integer' if key.kind == 'int' else 'a number'}") from None
        if (key.lo is not None and value < key.lo) or (key.hi is not None and value > key.hi):
            raise ConfigError(f"{where}: {value} is out of bounds [{key.lo}, {key.hi}]")
        return value
    if key.kind == "bool":
        lowered = raw.lower()
        if lowered in ("1", "yes", "true", "on"):
            return True
        if lowered in ("0", "no", "false", "off"):
            return False
        raise ConfigError(f"{where}: {raw!r} is not a boolean (yes/no, true/false, on/off, 1/0)")
    if key.kind == "choice":
        if raw not in key.choices:
            raise ConfigError(f"{where}: {raw!r} is not one of {', '.join(key.choices)}")
        return raw
    if key.kind == "list":
        items = tuple(item.strip() for item in re.split(r"[,\s]+", raw) if item.strip())
        for item in items:
            if key.pattern is not None and not key.pattern.match(item):
                raise ConfigError(f"{where}: {item!r} is not valid; expected {key.what}")
        if len(set(items)) != len(items):
            raise ConfigError(f"{where}: an item is listed twice")
        return items
    raise AssertionError(key.kind)


def parse(text: str, path: str = "<string>") -> dict[str, dict[str, Any]]:
    """Parse config text into {section: {key: value}} with every default filled in."""
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    parser.optionxform = str  # keys are case-sensitive: a typo in case is still a typo
    try:
        parser.read_string(text, source=path)
    except configparser.Error as e:
        raise ConfigError(f"{path}: {e}") from None
    for section in parser.sections():
        if section not in SCHEMA:
            raise ConfigError(f"{path}: unknown section [{section}]; known: {', '.join(SCHEMA)}")
        for name in parser[section]:
            if name not in SCHEMA[section]:
                raise ConfigError(
                    f"{path}: unknown key {name!r} in [{section}]; known: {', '.join(SCHEMA[section])}")
    result: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        values = {}
        for name, key in keys.items():
            where = f"{path}: [{section}] {name}"
            if parser.has_option(section, name):
                values[name] = _convert(key, parser[section][name], where)
            elif key.default is REQUIRED:
                raise ConfigError(f"{where} is required")
            else:
                values[name] = key.default
        result[section] = values
    if not result["hardware"]["slots"]:
        raise ConfigError(f"{path}: [hardware] slots is required: list the machine's slot codes")
    for fault in ("jam", "empty", "double"):
        unknown = set(result["sim"][fault]) - set(result["hardware"]["slots"])
        if unknown:
            raise ConfigError(f"{path}: [sim] {fault} names slots not in [hardware] slots: {', '.join(sorted(unknown))}")
    if not result["machine"]["name"]:
        result["machine"]["name"] = result["machine"]["id"]
    return result


def load(path: str = DEFAULT_PATH) -> dict[str, dict[str, Any]]:
    """Read and check the config file at ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    return parse(text, path)
