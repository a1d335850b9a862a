"""The controller's INI config: every key typed, bounded and known, read once at start.

The schema below is also the list of defaults. An unknown section or key, a value of the wrong type or out
of bounds, or a missing required key is a ConfigError that names the file, the section and the key.
"""

from __future__ import annotations

import configparser
import math
import os
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
    kind: str  # str, int, float, bool, list, choice, map (name:number pairs, numbers bounded by lo/hi)
    default: Any = REQUIRED
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    pattern: re.Pattern | None = None
    what: str = ""


SLOT_LIST = Key("list", (), pattern=SLOT_RE, what="slot codes like A1, B12")
# BCM numbers of the GPIO lines on the 40-pin header of every Raspberry Pi since the B+.
BCM_LO, BCM_HI = 2, 27
# Until a program claims them, GPIO 0-8 are pulled up and 9-27 pulled down (BCM2835 datasheet, table 6-31;
# the same on the Pi 5's RP1). A motor output must rest at "off" while the Pi boots.
PULLED_UP_AT_RESET = range(0, 9)
PIN = Key("int", 0, 0, BCM_HI, what=f"a BCM GPIO number {BCM_LO}-{BCM_HI}, or 0 for none")

SCHEMA: dict[str, dict[str, Key]] = {
    "machine": {
        "id": Key("str", pattern=MACHINE_ID_RE, what="1-32 of a-z, 0-9 and '-'"),
        "name": Key("str", ""),
        "secret": Key("str", lo=16, hi=256, what="the machine's QR secret, at least 16 characters"),
        # Where secrets fetched after a rotation are kept (they override secret and the [mqtt] login);
        # empty: credentials.ini beside the ledger, which stays writable under a read-only root.
        "credentials_file": Key("str", ""),
    },
    "cloud": {
        "url": Key("str", pattern=re.compile(r"^https?://[^\s/]+(/[^\s]*)?$"), what="http(s)://host[:port]"),
        # How often to ask the cloud whether the machine's secrets were rotated (also on every connect,
        # and at once when the cloud says so); a rotation's overlap (24 h by default) must be longer.
        "credentials_check_s": Key("float", 3600.0, 60.0, 86400.0),
    },
    "mqtt": {
        "host": Key("str", "localhost"),
        "port": Key("int", 1883, 1, 65535),
        "protocol": Key("choice", "5", choices=("5", "3.1.1")),
        "username": Key("str", ""),
        "password": Key("str", ""),
        "tls": Key("bool", False),
        "ca_file": Key("str", ""),
        # A client certificate from the fleet CA instead of a password: the broker takes its CN as the user.
        "cert_file": Key("str", ""),
        "key_file": Key("str", ""),
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
        # auto: the simulator's PNG file for backend sim, the framebuffer for a real machine
        "display": Key("choice", "auto", choices=("auto", "png", "framebuffer")),
        "framebuffer": Key("str", "/dev/fb0"),
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
    "gpio": {
        # rpigpio on a Pi 1-4, lgpio on a Pi 5. mock is gpiozero's MockFactory with a simulated machine
        # wired to its pins (physics from [sim]): for tests and benchmarks, never a default.
        "pin_library": Key("choice", "", choices=("", "rpigpio", "lgpio", "mock")),
        "motor_wiring": Key("choice", "matrix", choices=("matrix", "direct")),
        "motor_rows": Key("map", {}, BCM_LO, BCM_HI, pattern=re.compile(r"^[A-Z]\Z"),
                          what="row letter:pin pairs like A:5 B:6"),
        "motor_columns": Key("map", {}, BCM_LO, BCM_HI, pattern=re.compile(r"^[0-9]{1,2}\Z"),
                             what="column number:pin pairs like 1:12 2:16"),
        "motor_pins": Key("map", {}, BCM_LO, BCM_HI, pattern=SLOT_RE, what="slot:pin pairs like A1:17 A2:27"),
        "motor_active_high": Key("bool", True),
        "cam_pin": PIN,  # the spiral's cam switch, closed once per turn; 0: turns end on turn_limit_s only
        "turn_limit_s": Key("float", 4.0, 0.2, 30.0),
        "drop_pin": PIN,
        "drop_active_low": Key("bool", True),
        "drop_bounce_ms": Key("float", 1.0, 0.0, 100.0),
        "door_pin": PIN,
        "service_pin": PIN,
    },
    "serial": {
        "port": Key("str", "/dev/ttyAMA0"),  # or a pyserial URL (loop://, rfc2217://)
        "baud": Key("int", 115200, 1200, 3000000),
        "timeout_ms": Key("int", 200, 10, 5000),
        "retries": Key("int", 3, 0, 10),
        "motors": Key("map", {}, 0, 255, pattern=SLOT_RE,
                      what="slot:board motor number pairs like A1:0 A2:1 (default: slots in order)"),
    },
    "thermometer": {
        "w1_id": Key("str", "", pattern=re.compile(r"^$|^[0-9a-f]{2}-[0-9a-f]{12}\Z"),
                     what="a 1-wire id like 28-0316a2794eff, or empty for none"),
        "w1_dir": Key("str", "/sys/bus/w1/devices"),
        "read_every_s": Key("float", 60.0, 5.0, 3600.0),
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
    if key.kind == "map":
        pairs: dict[str, int] = {}
        for item in (item for item in re.split(r"[,\s]+", raw) if item):
            name, sep, number = item.partition(":")
            if not sep or not (number.isascii() and number.isdigit()):
                raise ConfigError(f"{where}: {item!r} is not a name:number pair; expected {key.what}")
            if key.pattern is not None and not key.pattern.match(name):
                raise ConfigError(f"{where}: {name!r} in {item!r} is not valid; expected {key.what}")
            if name in pairs:
                raise ConfigError(f"{where}: {name} is listed twice")
            value = int(number)
            if not key.lo <= value <= key.hi:
                raise ConfigError(f"{where}: {value} in {item!r} is out of bounds [{key.lo}, {key.hi}]")
            pairs[name] = value
        return pairs
    if key.kind == "list":
        items = tuple(item.strip() for item in re.split(r"[,\s]+", raw) if item.strip())
        for item in items:
            if key.pattern is not None and not key.pattern.match(item):
                raise ConfigError(f"{where}: {item!r} is not valid; expected {key.what}")
        if len(set(items)) != len(items):
            raise ConfigError(f"{where}: an item is listed twice")
        return items
    raise AssertionError(key.kind)


def _parser() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    parser.optionxform = str  # keys are case-sensitive: a typo in case is still a typo
    return parser


def parse(text: str, path: str = "<string>") -> dict[str, dict[str, Any]]:
    """Parse config text into {section: {key: value}} with every default filled in."""
    parser = _parser()
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
    if result["hardware"]["backend"] == "gpio":
        check_pin_map(result, path)
    if result["hardware"]["backend"] == "serial":
        unmapped = set(result["serial"]["motors"]) ^ set(result["hardware"]["slots"])
        if result["serial"]["motors"] and unmapped:
            raise ConfigError(f"{path}: [serial] motors must map exactly the slots in [hardware] slots; "
                              f"differs on {', '.join(sorted(unmapped))}")
        numbers = list(result["serial"]["motors"].values())
        if len(set(numbers)) != len(numbers):
            raise ConfigError(f"{path}: [serial] motors: a board motor number is used for two slots")
    mqtt = result["mqtt"]
    if bool(mqtt["cert_file"]) != bool(mqtt["key_file"]):
        raise ConfigError(f"{path}: [mqtt] cert_file and key_file go together: give both or neither")
    if mqtt["cert_file"] and not mqtt["tls"]:
        raise ConfigError(f"{path}: [mqtt] cert_file needs tls = yes: a certificate is presented over TLS only")
    if not result["machine"]["name"]:
        result["machine"]["name"] = result["machine"]["id"]
    return result


def check_pin_map(cfg: dict, path: str) -> None:
    """The GPIO pin map: a pin library named, every slot wired, no pin used twice, the drop sensor there."""
    gpio = cfg["gpio"]
    where = f"{path}: [gpio]"
    if not gpio["pin_library"]:
        raise ConfigError(f"{where} pin_library is required for backend gpio: rpigpio on a Raspberry Pi 1-4, "
                          "lgpio on a Pi 5")
    uses: dict[int, str] = {}

    def use(pin: int, what: str, motor: bool = False) -> None:
        if pin < BCM_LO:
            raise ConfigError(f"{where} {what}: GPIO {pin} is not usable; use BCM {BCM_LO}-{BCM_HI}")
        if pin in uses:
            raise ConfigError(f"{where}: GPIO {pin} is used twice: by {uses[pin]} and by {what}")
        uses[pin] = what
        if motor and (pin in PULLED_UP_AT_RESET) == gpio["motor_active_high"]:
            good = "9-27" if gpio["motor_active_high"] else f"{BCM_LO}-8"
            raise ConfigError(
                f"{where} {what}: GPIO {pin} is pulled {'up' if pin in PULLED_UP_AT_RESET else 'down'} at power-on, "
                f"so a motor wired active-{'high' if gpio['motor_active_high'] else 'low'} to it would turn while "
                f"the Pi boots; use GPIO {good} for motor outputs, or change motor_active_high")

    slots = cfg["hardware"]["slots"]
    if gpio["motor_wiring"] == "matrix":
        rows, columns = gpio["motor_rows"], gpio["motor_columns"]
        for slot in slots:
            if slot[0] not in rows:
                raise ConfigError(f"{where} motor_rows: slot {slot} has no row {slot[0]}")
            if slot[1:] not in columns:
                raise ConfigError(f"{where} motor_columns: slot {slot} has no column {slot[1:]}")
        for name, pin in rows.items():
            use(pin, f"motor_rows {name}", motor=True)
        for name, pin in columns.items():
            use(pin, f"motor_columns {name}", motor=True)
    else:
        missing = [slot for slot in slots if slot not in gpio["motor_pins"]]
        if missing:
            raise ConfigError(f"{where} motor_pins: no pin for slot {', '.join(missing)}")
        extra = sorted(set(gpio["motor_pins"]) - set(slots))
        if extra:
            raise ConfigError(f"{where} motor_pins: {', '.join(extra)} not in [hardware] slots")
        for slot, pin in gpio["motor_pins"].items():
            use(pin, f"motor_pins {slot}", motor=True)
    if not gpio["drop_pin"]:
        raise ConfigError(f"{where} drop_pin is required: the pin of the drop sensor")
    for key in ("cam_pin", "drop_pin", "door_pin", "service_pin"):
        if gpio[key]:
            use(gpio[key], key)


CREDENTIAL_KEYS = {"machine": ("secret",), "mqtt": ("username", "password")}


def credentials_path(cfg: dict) -> str:
    path = cfg["machine"]["credentials_file"]
    return path or os.path.join(os.path.dirname(cfg["ledger"]["path"]) or ".", "credentials.ini")


def load(path: str = DEFAULT_PATH) -> dict[str, dict[str, Any]]:
    """Read and check the config file at ``path``, then the credentials a rotation left beside the ledger."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    cfg = parse(text, path)
    apply_credentials(cfg, credentials_path(cfg))
    return cfg


def apply_credentials(cfg: dict, path: str) -> bool:
    """Override the secret and the broker login with those in ``path``, if it exists; True if it did."""
    parser = _parser()
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except FileNotFoundError:
        return False
    except (OSError, configparser.Error) as e:
        raise ConfigError(f"{path}: cannot read credentials: {e}") from None
    for section in parser.sections():
        for name in parser[section]:
            if name not in CREDENTIAL_KEYS.get(section, ()):
                raise ConfigError(f"{path}: [{section}] {name} does not belong in a credentials file; it holds "
                                  "only [machine] secret and [mqtt] username, password")
            cfg[section][name] = _convert(SCHEMA[section][name], parser[section][name], f"{path}: [{section}] {name}")
    return True


def write_credentials(path: str, secret: str, username: str, password: str) -> None:
    """Keep fetched credentials for the next start: written whole (a power cut leaves the old or the new
    file, never half of one), readable by the service user only."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"# Written by vend-controller after a secret rotation; overrides controller.ini.\n"
                f"[machine]\nsecret = {secret}\n[mqtt]\nusername = {username}\npassword = {password}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
