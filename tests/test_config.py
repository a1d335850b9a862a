"""Unit tests for controller/config.py: the typed, bounded INI schema and its error messages."""

import pytest

from controller.config import SCHEMA, ConfigError, load, parse

PATH = "/etc/vend/test.ini"
SECRET = "s3cret-s3cret-16chars"

MINIMAL = f"""
[machine]
id = vm-001
secret = {SECRET}

[cloud]
url = https://vend.example.com

[hardware]
backend = sim
slots = A1,A2
"""


def with_lines(section, *lines, base=MINIMAL):
    """MINIMAL with extra lines added to a section (the section is created if it is missing)."""
    header = f"[{section}]\n"
    if header in base:
        return base.replace(header, header + "\n".join(lines) + "\n")
    return base + "\n" + header + "\n".join(lines) + "\n"


def without(line, base=MINIMAL):
    assert line in base
    return base.replace(line + "\n", "")


def fails(text, *fragments, path=PATH):
    with pytest.raises(ConfigError) as info:
        parse(text, path)
    message = str(info.value)
    assert path in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_minimal_config_parses_with_defaults_filled_in():
    cfg = parse(MINIMAL, PATH)
    assert set(cfg) == set(SCHEMA)
    assert cfg["machine"] == {"id": "vm-001", "name": "vm-001", "secret": SECRET}
    assert cfg["cloud"]["url"] == "https://vend.example.com"
    assert cfg["hardware"] == {"backend": "sim", "slots": ("A1", "A2")}
    assert cfg["mqtt"]["host"] == "localhost"
    assert cfg["mqtt"]["port"] == 1883
    assert cfg["mqtt"]["tls"] is False
    assert cfg["mqtt"]["protocol"] == "5"
    assert cfg["vend"] == {"drop_timeout_s": 3.0, "turns": 2}
    assert cfg["sim"]["jam"] == () and cfg["sim"]["double"] == ()
    assert cfg["ledger"]["path"] == "/var/lib/vend/ledger.db"
    for section, keys in SCHEMA.items():
        assert set(cfg[section]) == set(keys)


def test_values_are_converted_to_their_types():
    text = with_lines("mqtt", "port = 8883", "tls = yes", "resend_after_s = 2.5")
    text = with_lines("sim", "jam = A2", "drop_delay_s = 0", base=text)
    text = with_lines("machine", "name = Lobby", base=text)
    cfg = parse(text, PATH)
    assert cfg["mqtt"]["port"] == 8883
    assert cfg["mqtt"]["tls"] is True
    assert cfg["mqtt"]["resend_after_s"] == 2.5
    assert cfg["sim"]["jam"] == ("A2",)
    assert cfg["sim"]["drop_delay_s"] == 0.0
    assert cfg["machine"]["name"] == "Lobby"


def test_unknown_section_is_an_error_naming_it():
    fails(with_lines("printer", "model = x"), "[printer]")


def test_unknown_key_is_an_error_naming_it():
    fails(with_lines("mqtt", "prot = 5"), "'prot'", "[mqtt]")


def test_key_names_are_case_sensitive():
    fails(with_lines("mqtt", "Port = 1883"), "'Port'")


def test_missing_required_secret_is_an_error_naming_it():
    fails(without(f"secret = {SECRET}"), "[machine] secret", "required")


def test_missing_required_cloud_url_is_an_error_naming_it():
    fails(without("url = https://vend.example.com"), "[cloud] url", "required")


def test_bad_int_is_an_error_naming_the_key():
    fails(with_lines("mqtt", "port = abc"), "[mqtt] port", "'abc'")


def test_bad_float_is_an_error_naming_the_key():
    fails(with_lines("vend", "drop_timeout_s = soon"), "[vend] drop_timeout_s", "'soon'")


def test_out_of_bounds_port_is_an_error_naming_the_key():
    fails(with_lines("mqtt", "port = 70000"), "[mqtt] port", "70000", "out of bounds")


def test_out_of_bounds_turns_is_an_error_naming_the_key():
    fails(with_lines("vend", "turns = 0"), "[vend] turns", "out of bounds")


def test_bad_boolean_is_an_error_naming_the_key():
    fails(with_lines("mqtt", "tls = maybe"), "[mqtt] tls", "'maybe'", "boolean")


def test_choice_not_in_the_list_is_an_error_naming_the_key():
    text = MINIMAL.replace("backend = sim", "backend = floppy")
    fails(text, "[hardware] backend", "'floppy'", "sim")


def test_bad_machine_id_is_an_error_naming_the_key():
    fails(MINIMAL.replace("id = vm-001", "id = VM_001"), "[machine] id", "'VM_001'")


def test_bad_slot_code_is_an_error_naming_the_key():
    fails(MINIMAL.replace("slots = A1,A2", "slots = A1,a2"), "[hardware] slots", "'a2'")


def test_slot_listed_twice_is_an_error_naming_the_key():
    fails(MINIMAL.replace("slots = A1,A2", "slots = A1,A2,A1"), "[hardware] slots", "twice")


def test_empty_slot_list_is_an_error():
    fails(MINIMAL.replace("slots = A1,A2", "slots ="), "[hardware] slots")


def test_sim_jam_naming_an_unknown_slot_is_an_error():
    fails(with_lines("sim", "jam = A1,B7"), "[sim] jam", "B7")


def test_short_secret_is_an_error_naming_the_key():
    fails(MINIMAL.replace(SECRET, "short"), "[machine] secret", "too short")


def test_bad_cloud_url_is_an_error_naming_the_key():
    fails(MINIMAL.replace("https://vend.example.com", "ftp://vend.example.com"), "[cloud] url")


def test_malformed_ini_is_a_config_error_naming_the_path():
    fails("this is not ini\n")


def test_load_reads_a_file(tmp_path):
    path = tmp_path / "controller.ini"
    path.write_text(MINIMAL, encoding="utf-8")
    assert load(str(path))["machine"]["id"] == "vm-001"


def test_load_errors_name_the_file(tmp_path):
    path = tmp_path / "controller.ini"
    path.write_text(with_lines("mqtt", "port = abc"), encoding="utf-8")
    with pytest.raises(ConfigError, match="port") as info:
        load(str(path))
    assert str(path) in str(info.value)


def test_load_of_a_missing_file_names_the_path(tmp_path):
    path = str(tmp_path / "nope.ini")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert path in str(info.value)
