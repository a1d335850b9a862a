"""Unit tests for how the config is assembled: each hardware backend declares its own section, the parser
collects the sections from the backend registry, and sections are typed objects."""

import sys
import types
from dataclasses import dataclass

import pytest

import hw
from controller.config import SCHEMA, ConfigError, parse
from hw.gpio import GpioSettings
from hw.mdb import MdbSettings
from hw.serial_board import SerialSettings
from hw.settings import Settings, key
from hw.sim import SimSettings
from hw.w1 import ThermometerSettings

BASE = "[machine]\nid = vm-1\nsecret = 0123456789abcdef\n[cloud]\nurl = http://cloud\n"


def test_each_backends_section_is_the_one_declared_in_its_own_file():
    assert SCHEMA["sim"] == SimSettings.schema()
    assert SCHEMA["gpio"] == GpioSettings.schema()
    assert SCHEMA["serial"] == SerialSettings.schema()
    assert SCHEMA["mdb"] == MdbSettings.schema()
    assert SCHEMA["thermometer"] == ThermometerSettings.schema()
    assert list(SCHEMA) == ["machine", "cloud", "mqtt", "ledger", "vend", "screen", "hardware", "sim", "gpio",
                            "serial", "mdb", "thermometer", "service"]


def test_sections_are_typed_objects_with_their_defaults():
    cfg = parse(BASE + "[hardware]\nbackend = serial\nslots = A1 A2\n[serial]\nbaud = 9600\n")
    serial = cfg.section(SerialSettings)
    assert isinstance(serial, SerialSettings)
    assert (serial.port, serial.baud, serial.motors) == ("/dev/ttyAMA0", 9600, {})
    assert cfg.mqtt.port == 1883 and cfg.hardware.slots == ("A1", "A2")
    assert cfg["serial"]["baud"] == 9600  # read by name too, as the cloud's provisioning checks do


def test_a_map_default_is_not_shared_between_configs():
    one = parse(BASE + "[hardware]\nbackend = sim\nslots = A1\n")
    two = parse(BASE + "[hardware]\nbackend = sim\nslots = A1\n")
    one.section(GpioSettings).motor_pins["A1"] = 5
    assert two.section(GpioSettings).motor_pins == {}


@dataclass(kw_only=True, eq=False)
class ConveyorSettings(Settings, section="conveyor"):
    """[conveyor]: a backend made up for this test."""

    belt_speed: int = key("int", 3, 1, 9)


@pytest.fixture
def conveyor_backend(monkeypatch):
    """A backend registered by name, as a plug-in would be, with its own section and its own check."""
    module = types.ModuleType("conveyor_backend")
    module.SETTINGS = (ConveyorSettings,)
    checked = []
    module.check_config = lambda cfg, path: checked.append(cfg.section(ConveyorSettings).belt_speed)
    monkeypatch.setitem(sys.modules, "conveyor_backend", module)
    monkeypatch.setitem(hw.BACKENDS, "conveyor", "conveyor_backend")
    return checked


def test_a_newly_registered_backend_brings_its_section_and_its_check(conveyor_backend):
    cfg = parse(BASE + "[hardware]\nbackend = conveyor\nslots = A1\n[conveyor]\nbelt_speed = 7\n")
    assert cfg.section(ConveyorSettings).belt_speed == 7
    assert conveyor_backend == [7]  # run because it is the configured backend


def test_a_registered_backends_keys_are_typed_and_its_unknown_keys_named(conveyor_backend):
    with pytest.raises(ConfigError, match=r"/etc/c.ini: \[conveyor\] belt_speed: 12 is out of bounds"):
        parse(BASE + "[hardware]\nbackend = conveyor\nslots = A1\n[conveyor]\nbelt_speed = 12\n", "/etc/c.ini")
    with pytest.raises(ConfigError, match=r"/etc/c.ini: unknown key 'belt' in \[conveyor\]; known: belt_speed"):
        parse(BASE + "[hardware]\nbackend = sim\nslots = A1\n[conveyor]\nbelt = 2\n", "/etc/c.ini")


def test_only_the_configured_backend_runs_its_check(conveyor_backend):
    parse(BASE + "[hardware]\nbackend = sim\nslots = A1\n")
    assert conveyor_backend == []


def test_a_backend_that_is_not_registered_is_named_with_those_that_are():
    with pytest.raises(ConfigError, match=r"\[hardware\] backend: 'floppy' is not one of sim, gpio, serial"):
        parse(BASE + "[hardware]\nbackend = floppy\nslots = A1\n")
