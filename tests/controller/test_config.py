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
    assert cfg["machine"] == {"id": "vm-001", "name": "vm-001", "secret": SECRET, "credentials_file": ""}
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


# -- [gpio]: the "map" kind and the pin map ------------------------------------------------------------------

GPIO_KEYS = {"pin_library": "rpigpio", "motor_rows": "A:9", "motor_columns": "1:10 2:11", "cam_pin": "22",
             "drop_pin": "23", "door_pin": "24", "service_pin": "25"}


def gpio_text(slots="A1,A2", **changes):
    """MINIMAL for backend gpio with GPIO_KEYS, some changed; a key given as None is left out."""
    keys = {**GPIO_KEYS, **changes}
    base = MINIMAL.replace("backend = sim", "backend = gpio").replace("slots = A1,A2", f"slots = {slots}")
    return with_lines("gpio", *(f"{k} = {v}" for k, v in keys.items() if v is not None), base=base)


def test_a_gpio_pin_map_parses_into_numbers():
    gpio = parse(gpio_text(), PATH)["gpio"]
    assert gpio["motor_rows"] == {"A": 9}
    assert gpio["motor_columns"] == {"1": 10, "2": 11}
    assert (gpio["cam_pin"], gpio["drop_pin"], gpio["door_pin"], gpio["service_pin"]) == (22, 23, 24, 25)
    assert gpio["pin_library"] == "rpigpio"
    assert gpio["motor_wiring"] == "matrix" and gpio["motor_active_high"] is True


@pytest.mark.parametrize("text", ["1:10 2:11", "1:10,2:11", "1:10, 2:11,"])
def test_map_pairs_are_separated_by_spaces_or_commas(text):
    assert parse(gpio_text(motor_columns=text), PATH)["gpio"]["motor_columns"] == {"1": 10, "2": 11}


@pytest.mark.parametrize("item", ["A9", "A:", "A:x", "A:-9", "A=9"])
def test_map_item_that_is_not_a_name_number_pair_is_an_error(item):
    fails(gpio_text(motor_rows=item), "[gpio] motor_rows", repr(item), "name:number pair", "A:5")


def test_map_name_that_does_not_fit_the_key_is_an_error():
    fails(gpio_text(motor_rows="a:9"), "[gpio] motor_rows", "'a' in 'a:9'", "row letter")


def test_map_name_listed_twice_is_an_error():
    fails(gpio_text(motor_rows="A:9 A:12"), "[gpio] motor_rows", "A is listed twice")


@pytest.mark.parametrize("item, number", [("A:28", "28"), ("A:1", "1"), ("A:0", "0")])
def test_map_number_out_of_bounds_is_an_error(item, number):
    fails(gpio_text(motor_rows=item), "[gpio] motor_rows", f"{number} in {item!r}", "out of bounds [2, 27]")


def test_map_number_in_other_digits_is_a_config_error():
    # str.isdigit() accepts "²", which int() does not: still a typo to report with the file and the key.
    fails(gpio_text(motor_rows="A:²"), "[gpio] motor_rows", "name:number pair")


def test_serial_motor_numbers_have_their_own_bounds():
    text = with_lines("serial", "motors = A1:0 A2:256", base=MINIMAL.replace("backend = sim", "backend = serial"))
    fails(text, "[serial] motors", "256 in 'A2:256'", "out of bounds")


def test_backend_gpio_needs_a_pin_library():
    fails(gpio_text(pin_library=None), "[gpio] pin_library is required", "rpigpio", "lgpio")


@pytest.mark.parametrize("changes, pin, first, second", [
    ({"drop_pin": "22"}, 22, "cam_pin", "drop_pin"),
    ({"door_pin": "9"}, 9, "motor_rows A", "door_pin"),
    ({"motor_columns": "1:10 2:9"}, 9, "motor_rows A", "motor_columns 2"),
    ({"service_pin": "24"}, 24, "door_pin", "service_pin"),
])
def test_a_pin_used_twice_is_an_error_naming_both_uses(changes, pin, first, second):
    fails(gpio_text(**changes), f"GPIO {pin} is used twice", f"by {first} and by {second}")


def test_a_pin_below_the_header_range_is_an_error():
    fails(gpio_text(cam_pin="1"), "[gpio] cam_pin", "GPIO 1 is not usable", "BCM 2-27")


def test_a_slot_without_a_row_is_an_error():
    fails(gpio_text(slots="A1,B1", motor_columns="1:10"), "[gpio] motor_rows", "slot B1 has no row B")


def test_a_slot_without_a_column_is_an_error():
    fails(gpio_text(slots="A1,A3"), "[gpio] motor_columns", "slot A3 has no column 3")


def test_a_directly_wired_slot_without_a_pin_is_an_error():
    fails(gpio_text(motor_wiring="direct", motor_pins="A1:17", motor_rows=None, motor_columns=None),
          "[gpio] motor_pins", "no pin for slot A2")


def test_a_direct_pin_for_a_slot_the_machine_lacks_is_an_error():
    fails(gpio_text(motor_wiring="direct", motor_pins="A1:17 A2:18 B1:19", motor_rows=None, motor_columns=None),
          "[gpio] motor_pins", "B1 not in [hardware] slots")


def test_direct_wiring_parses():
    gpio = parse(gpio_text(motor_wiring="direct", motor_pins="A1:17, A2:27", motor_rows=None,
                           motor_columns=None), PATH)["gpio"]
    assert gpio["motor_pins"] == {"A1": 17, "A2": 27}


@pytest.mark.parametrize("active_high, rows, pin, pulled, good", [
    ("yes", "A:8", 8, "up", "9-27"),
    ("yes", "A:2", 2, "up", "9-27"),
    ("no", "A:9", 9, "down", "2-8"),
    ("no", "A:27", 27, "down", "2-8"),
])
def test_a_motor_pin_that_would_turn_the_motor_at_power_on_is_an_error(active_high, rows, pin, pulled, good):
    columns = "1:10 2:11" if active_high == "yes" else "1:3 2:4"
    fails(gpio_text(motor_active_high=active_high, motor_rows=rows, motor_columns=columns),
          "[gpio] motor_rows A", f"GPIO {pin} is pulled {pulled} at power-on", f"use GPIO {good}")


def test_a_direct_motor_pin_pulled_the_wrong_way_is_an_error():
    fails(gpio_text(motor_wiring="direct", motor_pins="A1:17 A2:5", motor_rows=None, motor_columns=None),
          "[gpio] motor_pins A2", "GPIO 5 is pulled up", "use GPIO 9-27")


@pytest.mark.parametrize("active_high, rows, columns", [("yes", "A:9", "1:26 2:27"), ("no", "A:2", "1:7 2:8")])
def test_motor_pins_that_rest_off_at_power_on_parse(active_high, rows, columns):
    gpio = parse(gpio_text(motor_active_high=active_high, motor_rows=rows, motor_columns=columns), PATH)["gpio"]
    assert gpio["motor_active_high"] is (active_high == "yes")


def test_inputs_may_use_pins_pulled_either_way():
    gpio = parse(gpio_text(cam_pin="4", drop_pin="5", door_pin="6", service_pin="7"), PATH)["gpio"]
    assert gpio["drop_pin"] == 5


def test_backend_gpio_needs_a_drop_pin():
    fails(gpio_text(drop_pin=None), "[gpio] drop_pin is required")


def test_the_pin_map_is_only_checked_for_backend_gpio():
    text = MINIMAL + "\n[gpio]\nmotor_rows = A:5\n"
    assert parse(text, PATH)["gpio"]["motor_rows"] == {"A": 5}


# -- [serial] motors ------------------------------------------------------------------------------------------

SERIAL = MINIMAL.replace("backend = sim", "backend = serial")


def test_serial_motors_map_parses_and_may_be_left_out():
    assert parse(with_lines("serial", "motors = A1:3 A2:0", base=SERIAL), PATH)["serial"]["motors"] == {
        "A1": 3, "A2": 0}
    assert parse(SERIAL, PATH)["serial"]["motors"] == {}


@pytest.mark.parametrize("motors, differs", [("A1:0", "A2"), ("A1:0 A2:1 B1:2", "B1"), ("A1:0 B1:1", "A2, B1")])
def test_serial_motors_that_do_not_match_the_slots_is_an_error(motors, differs):
    fails(with_lines("serial", f"motors = {motors}", base=SERIAL), "[serial] motors", f"differs on {differs}")


def test_a_board_motor_number_used_twice_is_an_error():
    fails(with_lines("serial", "motors = A1:4 A2:4", base=SERIAL), "[serial] motors",
          "board motor number is used for two slots")


def test_credentials_kept_after_a_rotation_override_the_config(tmp_path):
    from controller.config import write_credentials

    config = tmp_path / "controller.ini"
    config.write_text(MINIMAL + f"[ledger]\npath = {tmp_path}/ledger.db\n[mqtt]\nusername = vm-001.1\npassword = old\n")
    write_credentials(str(tmp_path / "credentials.ini"), "a-newer-secret-of-32-characters!", "vm-001.2", "new")
    assert (tmp_path / "credentials.ini").stat().st_mode & 0o777 == 0o600
    cfg = load(str(config))
    assert cfg["machine"]["secret"] == "a-newer-secret-of-32-characters!"
    assert (cfg["mqtt"]["username"], cfg["mqtt"]["password"]) == ("vm-001.2", "new")
    (tmp_path / "credentials.ini").write_text("[mqtt]\nhost = elsewhere\n")
    with pytest.raises(ConfigError) as info:
        load(str(config))
    assert "credentials.ini: [mqtt] host does not belong in a credentials file" in str(info.value)
