"""The controller's INI config: every key typed, bounded and known, read once at start.

The controller's own sections are declared here; each hardware backend declares its own in its file
(``hw/sim.py``'s ``SimSettings``, ``hw/gpio.py``'s ``GpioSettings``, ...), collected through the backend
registry (``hw.config_sections``). The declarations are also the list of defaults. An unknown section or key,
a value of the wrong type or out of bounds, or a missing required key is a ConfigError that names the file,
the section and the key. Text after " ;" or " #" on a line is a comment (``ini_parser``).
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import hw
from hw.settings import REQUIRED, ConfigError, Key, Settings, convert, key
from protocol.topics import MACHINE_ID_RE

from .words import LANGUAGES

__all__ = ["DEFAULT_PATH", "SCHEMA", "Config", "ConfigError", "Key", "apply_credentials", "credentials_path",
           "ini_parser", "load", "parse", "write_credentials"]

DEFAULT_PATH = "/etc/vend/controller.ini"
SCREEN_LANGUAGE = re.compile(r"""^\[?["']?(""" + "|".join(re.escape(lang) + "|" + re.escape(lang.replace("_", "-"))
                                                       for lang in LANGUAGES) + r""")["']?\]?$""")
S = TypeVar("S", bound=Settings)


@dataclass(kw_only=True, eq=False)
class MachineSettings(Settings, section="machine"):
    """[machine]: who this machine is and the secret it signs its QR codes with."""

    id: str = key("str", pattern=MACHINE_ID_RE, what="1-32 of a-z, 0-9 and '-'")
    name: str = key("str", "")
    secret: str = key("str", lo=16, hi=256, what="the machine's QR secret, at least 16 characters")
    # Where secrets fetched after a rotation are kept (they override secret and the [mqtt] login);
    # empty: credentials.ini beside the ledger, which stays writable under a read-only root.
    credentials_file: str = key("str", "")

    def check(self, cfg: Config, path: str) -> None:
        if not self.name:
            self.name = self.id


@dataclass(kw_only=True, eq=False)
class CloudSettings(Settings, section="cloud"):
    """[cloud]: where the cloud's web service is."""

    url: str = key("str", pattern=re.compile(r"^https?://[^\s/]+(/[^\s]*)?$"), what="http(s)://host[:port]")
    # How often to ask the cloud whether the machine's secrets were rotated (also on every connect,
    # and at once when the cloud says so); a rotation's overlap (24 h by default) must be longer.
    credentials_check_s: float = key("float", 3600.0, 60.0, 86400.0)


@dataclass(kw_only=True, eq=False)
class MqttSettings(Settings, section="mqtt"):
    """[mqtt]: the broker, the login and the sync window."""

    host: str = key("str", "localhost")
    port: int = key("int", 1883, 1, 65535)
    protocol: str = key("choice", "5", choices=("5", "3.1.1"))
    username: str = key("str", "")
    password: str = key("str", "")
    tls: bool = key("bool", False)
    ca_file: str = key("str", "")
    # A client certificate from the fleet CA instead of a password: the broker takes its CN as the user.
    cert_file: str = key("str", "")
    key_file: str = key("str", "")
    keepalive_s: int = key("int", 30, 5, 600)
    batch_size: int = key("int", 200, 1, 1000)
    window: int = key("int", 8, 1, 100)
    resend_after_s: float = key("float", 10.0, 1.0, 600.0)
    # Each resend without an ack waits twice as long as the one before, up to this (issue 16).
    resend_max_s: float = key("float", 120.0, 1.0, 3600.0)
    # The retained status is sent on every connect and then this often; "offline" is the broker's last will.
    status_every_s: float = key("float", 300.0, 10.0, 3600.0)

    def check(self, cfg: Config, path: str) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError(f"{path}: [mqtt] cert_file and key_file go together: give both or neither")
        if self.resend_max_s < self.resend_after_s:
            raise ConfigError(f"{path}: [mqtt] resend_max_s ({self.resend_max_s:g}) must be at least "
                              f"resend_after_s ({self.resend_after_s:g})")
        if self.cert_file and not self.tls:
            raise ConfigError(f"{path}: [mqtt] cert_file needs tls = yes: a certificate is presented over TLS only")


@dataclass(kw_only=True, eq=False)
class LedgerSettings(Settings, section="ledger"):
    """[ledger]: where the machine's ledger lives."""

    path: str = key("str", "/var/lib/vend/ledger.db")


@dataclass(kw_only=True, eq=False)
class VendSettings(Settings, section="vend"):
    """[vend]: how long to wait for a drop, and how many turns to try."""

    drop_timeout_s: float = key("float", 3.0, 0.1, 60.0)
    turns: int = key("int", 2, 1, 3)


@dataclass(kw_only=True, eq=False)
class ScreenSettings(Settings, section="screen"):
    """[screen]: which display shows the QR, and how often the QR changes."""

    # auto: the simulator's PNG file for backend sim, the framebuffer for a real machine
    display: str = key("choice", "auto", choices=("auto", "png", "framebuffer"))
    framebuffer: str = key("str", "/dev/fb0")
    rotate_s: float = key("float", 5.0, 1.0, 300.0)
    url_file: str = key("str", "")  # also write the QR's URL here, for a demo or a test to read
    # The self-test at start (controller/selftest.py) waits this long for the broker and the clock, and then
    # stays on the screen this long before the QR takes its place.
    selftest_wait_s: float = key("float", 30.0, 0.0, 600.0)
    selftest_show_s: float = key("float", 5.0, 0.0, 600.0)
    # The languages the screen speaks, the first drawn largest and the second under it (controller/words.py).
    # Written "zh_CN, en" (or "zh-CN", or as a list: ["zh_CN", "en"]).
    languages: tuple = key("list", ("en",), pattern=SCREEN_LANGUAGE,
                           what="languages of the screen: " + ", ".join(LANGUAGES) + ", like zh_CN, en")
    # The font file for a language pillow's own font cannot draw (Chinese); empty: the one its package installs.
    font: str = key("str", "")

    def check(self, cfg: Config, path: str) -> None:
        self.languages = tuple(SCREEN_LANGUAGE.match(item).group(1).replace("-", "_") for item in self.languages)
        if len(set(self.languages)) != len(self.languages):
            raise ConfigError(f"{path}: [screen] languages: a language is listed twice")
        if not 1 <= len(self.languages) <= 2:
            raise ConfigError(f"{path}: [screen] languages: give one or two languages (the first drawn largest), "
                              f"not {len(self.languages)}")


@dataclass(kw_only=True, eq=False)
class ServiceSettings(Settings, section="service"):
    """[service]: the technician's local socket."""

    socket: str = key("str", "/run/vend/control.sock")


def sections() -> tuple[type[Settings], ...]:
    """The INI file's sections in the order a person reads them: the controller's, then the hardware's as
    the backend registry has them now."""
    return (MachineSettings, CloudSettings, MqttSettings, LedgerSettings, VendSettings, ScreenSettings,
            *hw.config_sections(), ServiceSettings)


def schema() -> dict[str, dict[str, Key]]:
    """{section: {key: Key}} for every section a config file may have."""
    return {cls.SECTION: cls.schema() for cls in sections()}


SCHEMA = schema()  # the sections of the backends this build ships, for tools and docs


class Config(Mapping):
    """The controller's whole config, read once: one typed ``Settings`` object per INI section.

    ``cfg.mqtt.port`` for the controller's own sections; ``cfg.section(GpioSettings)`` for a backend's.
    """

    def __init__(self, sections: dict[str, Settings], path: str = "<string>"):
        self._sections = sections
        self.path = path

    def __getitem__(self, name: str) -> Settings:
        return self._sections[name]

    def __iter__(self):
        return iter(self._sections)

    def __len__(self) -> int:
        return len(self._sections)

    def section(self, cls: type[S]) -> S:
        """The section that ``cls`` declares, typed as it."""
        return self._sections[cls.SECTION]

    @property
    def machine(self) -> MachineSettings:
        return self._sections["machine"]

    @property
    def cloud(self) -> CloudSettings:
        return self._sections["cloud"]

    @property
    def mqtt(self) -> MqttSettings:
        return self._sections["mqtt"]

    @property
    def ledger(self) -> LedgerSettings:
        return self._sections["ledger"]

    @property
    def vend(self) -> VendSettings:
        return self._sections["vend"]

    @property
    def screen(self) -> ScreenSettings:
        return self._sections["screen"]

    @property
    def service(self) -> ServiceSettings:
        return self._sections["service"]

    @property
    def hardware(self) -> hw.HardwareSettings:
        return self._sections["hardware"]


# " ; comment" and " # comment" after a value are comments, as in the docs' example hardware file; a "#" or
# ";" with no whitespace before it stays in the value ("Kiosk#3"). Whole-line comments are configparser's own.
INLINE_COMMENT_PREFIXES = (";", "#")


def ini_parser() -> configparser.ConfigParser:
    """The parser for every INI file of the controller (and the cloud's check of a technician's hardware file):
    no interpolation, case-sensitive keys, inline comments after whitespace stripped."""
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none",
                                       inline_comment_prefixes=INLINE_COMMENT_PREFIXES)
    parser.optionxform = str  # keys are case-sensitive: a typo in case is still a typo
    return parser


def parse(text: str, path: str = "<string>") -> Config:
    """Parse config text into a ``Config`` with every default filled in and every check passed."""
    parser = ini_parser()
    try:
        parser.read_string(text, source=path)
    except configparser.Error as e:
        raise ConfigError(f"{path}: {e}") from None
    known = schema()
    for section in parser.sections():
        if section not in known:
            raise ConfigError(f"{path}: unknown section [{section}]; known: {', '.join(known)}")
        for name in parser[section]:
            if name not in known[section]:
                raise ConfigError(
                    f"{path}: unknown key {name!r} in [{section}]; known: {', '.join(known[section])}")
    values_of: dict[str, Settings] = {}
    for cls in sections():
        section, values = cls.SECTION, {}
        for name, spec in cls.schema().items():
            where = f"{path}: [{section}] {name}"
            if parser.has_option(section, name):
                values[name] = convert(spec, parser[section][name], where)
            elif spec.default is REQUIRED:
                raise ConfigError(f"{where} is required")
        values_of[section] = cls(**values)
    cfg = Config(values_of, path)
    for settings in values_of.values():
        settings.check(cfg, path)
    hw.check_backend_config(cfg, path)
    return cfg


CREDENTIAL_KEYS = {"machine": ("secret",), "mqtt": ("username", "password")}


def credentials_path(cfg: Config) -> str:
    """Where rotated credentials are kept: ``[machine] credentials_file``, or beside the ledger."""
    return cfg.machine.credentials_file or os.path.join(os.path.dirname(cfg.ledger.path) or ".", "credentials.ini")


def load(path: str = DEFAULT_PATH) -> Config:
    """Read and check the config file at ``path``, then the credentials a rotation left beside the ledger."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    cfg = parse(text, path)
    apply_credentials(cfg, credentials_path(cfg))
    return cfg


def apply_credentials(cfg: Config, path: str) -> bool:
    """Override the secret and the broker login with those in ``path``, if it exists; True if it did."""
    parser = ini_parser()
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
            setattr(cfg[section], name, convert(SCHEMA[section][name], parser[section][name],
                                                f"{path}: [{section}] {name}"))
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
