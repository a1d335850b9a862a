"""How a part of the machine declares its INI section: typed, bounded keys with their defaults, beside its code.

A section is a dataclass of ``Settings`` whose fields are made with ``key()``: the field's type and default are
the key's, and its metadata says how the INI text is checked (kind, bounds, pattern). The controller's config
parser collects the sections of every registered backend (``hw.config_sections``), so a backend adds keys by
editing its own file, the way a Mopidy extension ships its ``ext.conf`` beside its code.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from protocol.messages import SLOT_RE

REQUIRED = object()


class ConfigError(ValueError):
    """A config file that cannot be used as it is; the text names the file and the key."""


@dataclass(frozen=True)
class Key:
    """How one INI key is read: its kind, default, bounds and pattern, and what to tell a person who got it wrong."""

    kind: str  # str, int, float, bool, list, choice, map (name:number pairs, numbers bounded by lo/hi)
    default: Any = REQUIRED
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    pattern: re.Pattern | None = None
    what: str = ""


def key(kind: str, default: Any = REQUIRED, lo: float | None = None, hi: float | None = None, *,
        choices: tuple[str, ...] = (), pattern: re.Pattern | None = None, what: str = "") -> Any:
    """A ``Settings`` field read from the INI key of the same name, as ``Key`` describes it."""
    return field_of(Key(kind, default, lo, hi, choices, pattern, what))


def field_of(spec: Key) -> Any:
    """A ``Settings`` field for an existing ``Key`` (a key shape shared by several fields)."""
    metadata = {"key": spec}
    if spec.default is REQUIRED:
        return dataclasses.field(metadata=metadata)
    if isinstance(spec.default, dict):
        return dataclasses.field(default_factory=lambda: dict(spec.default), metadata=metadata)
    return dataclasses.field(default=spec.default, metadata=metadata)


SLOT_LIST = Key("list", (), pattern=SLOT_RE, what="slot codes like A1, B12")


class Settings(Mapping):
    """One INI section's values as attributes (``cfg.mqtt.port``).

    Subclasses are ``@dataclass(kw_only=True, eq=False)`` with a ``section`` class argument. They are also
    read-only mappings of key name to value, so code and tests that index sections by name
    (``cfg["mqtt"]["port"]``, the cloud's provisioning checks) keep working; a mapping compares equal to a
    dict of the same keys and values.
    """

    SECTION: ClassVar[str] = ""

    def __init_subclass__(cls, section: str = "", **kwargs):
        super().__init_subclass__(**kwargs)
        if section:
            cls.SECTION = section

    @classmethod
    def schema(cls) -> dict[str, Key]:
        """The section's keys in declaration order."""
        return _schema(cls)

    def check(self, cfg, path: str) -> None:
        """Checks across keys or sections, after every section is read; raise ConfigError naming ``path``."""

    def __getitem__(self, name: str) -> Any:
        if name not in self.schema():
            raise KeyError(name)
        return getattr(self, name)

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in self.schema():
            raise KeyError(name)
        setattr(self, name, value)

    def __iter__(self):
        return iter(self.schema())

    def __len__(self) -> int:
        return len(self.schema())

    def __repr__(self) -> str:
        return f"[{self.SECTION}] {dict(self)!r}"


@functools.cache
def _schema(cls: type[Settings]) -> dict[str, Key]:
    return {f.name: f.metadata["key"] for f in dataclasses.fields(cls)}


def convert(key: Key, raw: str, where: str) -> Any:
    """The value of INI text ``raw`` for ``key``; ConfigError naming ``where`` when it does not fit."""
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
