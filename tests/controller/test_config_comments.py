"""Inline comments in the controller's INI files, and the hardware file the docs show, loaded as they show it."""

import re

import pytest

from cloud.provisioning.cloudinit import Card, CardError, check_hardware, controller_ini
from controller.config import ConfigError, parse
from tests.tools import REPO

HEAD = """
[machine]
id = vm-001
secret = s3cret-s3cret-16chars
[cloud]
url = https://vend.example.com
"""


def docs_hardware_file() -> str:
    """The example hardware file of docs/deploying.md's technician's page, exactly as the page shows it."""
    text = (REPO / "docs" / "deploying.md").read_text()
    blocks = re.findall(r"^( *)```ini\n(.*?)^\1```", text, re.S | re.M)
    examples = [body for _, body in blocks if "[hardware]" in body and "[gpio]" in body]
    assert len(examples) == 1, "docs/deploying.md should show one example hardware file"
    indent = re.match(r" *", examples[0]).group()
    return "".join(line[len(indent):] + "\n" for line in examples[0].splitlines())


def test_the_docs_example_hardware_file_is_loaded_as_shown():
    hardware = docs_hardware_file()
    assert re.search(r"^pin_library = lgpio +; ", hardware, re.M), "the example lost its inline comment"
    assert check_hardware(hardware, "lobby-3.ini") == hardware  # what vendctl provision checks at the desk
    cfg = parse(HEAD + hardware, "lobby-3.ini")
    assert cfg["gpio"]["pin_library"] == "lgpio"
    assert cfg["gpio"]["motor_rows"] == {"A": 20, "B": 21}
    assert cfg.hardware.slots == ("A1", "A2", "B1", "B2")


@pytest.mark.parametrize("line, value", [
    ("pin_library = lgpio ; rpigpio on a Pi 1-4", "lgpio"),
    ("pin_library = lgpio # the Pi 5's", "lgpio"),
    ("pin_library = lgpio\t; after a tab", "lgpio"),
])
def test_an_inline_comment_after_whitespace_is_not_part_of_the_value(line, value):
    cfg = parse(HEAD + "[hardware]\nbackend = gpio\nslots = A1\n[gpio]\n" + line
                + "\nmotor_wiring = direct\nmotor_pins = A1:17\ndrop_pin = 22\n", "x.ini")
    assert cfg["gpio"]["pin_library"] == value


def test_a_hash_or_semicolon_inside_a_value_stays_in_it():
    cfg = parse(HEAD.replace("[machine]\n", "[machine]\nname = Kiosk#3;east\n") + "[hardware]\nbackend = sim\nslots = A1\n")
    assert cfg.machine.name == "Kiosk#3;east"


def test_an_unknown_key_with_a_comment_is_still_an_error_naming_key_and_file():
    with pytest.raises(ConfigError, match=r"x\.ini: unknown key 'pin_libary' in \[gpio\]"):
        parse(HEAD + "[hardware]\nbackend = sim\nslots = A1\n[gpio]\npin_libary = lgpio ; typo\n", "x.ini")


def test_a_commented_value_is_still_checked():
    with pytest.raises(ConfigError, match=r"\[gpio\] pin_library"):
        parse(HEAD + "[hardware]\nbackend = sim\nslots = A1\n[gpio]\npin_library = lgpoi ; typo\n", "x.ini")


def test_the_desk_check_reads_comments_the_same_way_as_the_machine():
    # A comment must not hide backend = sim from the desk check (the machine would read plain "sim").
    with pytest.raises(CardError, match="backend = sim would sell"):
        check_hardware("[hardware]\nbackend = sim ; for the bench\nslots = A1\n", "bench.ini")


def card(name: str, hardware: str) -> Card:
    return Card(machine_id="lobby-3", name=name, secret="s3cret-s3cret-16chars", cloud_url="https://vend.example.com",
                mqtt_host="mqtt.example.com", mqtt_port=8883, hardware=hardware, hostname="vend-lobby-3",
                wheel="vend.whl", instance_id="vend-lobby-3-1")


def test_the_card_carries_the_docs_example_and_reads_back_the_same():
    text = controller_ini(card("Lobby, 3rd floor", docs_hardware_file()))
    cfg = parse(text, "controller.ini")
    assert (cfg.machine.name, cfg["gpio"]["pin_library"]) == ("Lobby, 3rd floor", "lgpio")


def test_a_machine_name_the_ini_would_cut_is_refused_at_the_desk():
    with pytest.raises(CardError, match=r"'Kiosk #3' would read back as 'Kiosk'"):
        controller_ini(card("Kiosk #3", docs_hardware_file()))
