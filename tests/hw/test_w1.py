"""Tests for hw/w1.py: a DS18B20 read through a w1_slave file laid out as the kernel's w1_therm shows it."""

import pytest

from controller.config import parse
from hw import HardwareError, open_hardware
from hw.w1 import W1Thermometer

SENSOR = "28-0316a2794eff"
GOOD = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
# -10.125 °C: the register holds 0xFF5E in sixteenths of a degree.
FROZEN = "5e ff 4b 46 7f ff 02 10 24 : crc=24 YES\n5e ff 4b 46 7f ff 02 10 24 t=-10125\n"
BAD_CRC = "72 01 4b 46 7f ff 0e 10 57 : crc=a0 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
POWER_ON = "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n"
ALL_ZEROS = "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n"
BUS = ("check that config.txt has dtoverlay=w1-gpio (and the pin it names), the 4.7 kΩ pull-up between the "
       "data line and 3.3 V, and the sensor's wiring")


def sensor_dir(tmp_path, text: str, w1_id: str = SENSOR):
    devices = tmp_path / "devices"
    (devices / w1_id).mkdir(parents=True, exist_ok=True)
    (devices / w1_id / "w1_slave").write_text(text)
    return str(devices)


class Reads:
    """The sensor's answers in turn, as the kernel gives a fresh conversion on every read."""

    def __init__(self, *texts):
        self.texts = list(texts)
        self.count = 0

    def __call__(self):
        self.count += 1
        return self.texts.pop(0)


def test_a_good_read_is_degrees_celsius(tmp_path):
    with W1Thermometer(SENSOR, sensor_dir(tmp_path, GOOD)) as thermometer:
        assert thermometer.read_c() == 23.125


def test_a_read_below_zero(tmp_path):
    assert W1Thermometer(SENSOR, sensor_dir(tmp_path, FROZEN)).read_c() == -10.125


def test_a_crc_failure_on_every_read_is_an_error_not_a_number(tmp_path):
    thermometer = W1Thermometer(SENSOR, sensor_dir(tmp_path, BAD_CRC))
    with pytest.raises(HardwareError) as e:
        thermometer.read_c()
    assert str(e.value) == (f"thermometer {SENSOR}: 2 reads in a row failed their CRC check; a noisy or too long "
                            f"bus, or a loose wire: {BUS}")


def test_one_crc_glitch_is_read_again(tmp_path):
    thermometer = W1Thermometer(SENSOR, sensor_dir(tmp_path, GOOD))
    thermometer._read = reads = Reads(BAD_CRC, GOOD)
    assert thermometer.read_c() == 23.125
    assert reads.count == 2


def test_without_retries_one_crc_failure_is_an_error(tmp_path):
    thermometer = W1Thermometer(SENSOR, sensor_dir(tmp_path, GOOD), crc_retries=0)
    thermometer._read = reads = Reads(BAD_CRC, GOOD)
    with pytest.raises(HardwareError, match=r"^thermometer 28-0316a2794eff: the read failed its CRC check; "):
        thermometer.read_c()
    assert reads.count == 1


def test_the_power_on_value_is_not_taken_for_85_degrees(tmp_path):
    with pytest.raises(HardwareError) as e:
        W1Thermometer(SENSOR, sensor_dir(tmp_path, POWER_ON)).read_c()
    assert str(e.value) == (f"thermometer {SENSOR} reports 85.000 °C, its power-on value, not a measurement: the "
                            "sensor reset during the read (check its power wire; in parasite power mode, the "
                            "pull-up)")


def test_a_data_line_held_low_is_not_taken_for_0_degrees(tmp_path):
    with pytest.raises(HardwareError) as e:
        W1Thermometer(SENSOR, sensor_dir(tmp_path, ALL_ZEROS)).read_c()
    assert str(e.value) == f"thermometer {SENSOR} read all zeros: the data line is held low; {BUS}"


def test_a_missing_sensor_names_the_sensors_on_the_bus(tmp_path):
    devices = sensor_dir(tmp_path, GOOD, "28-000000000001")
    with pytest.raises(HardwareError) as e:
        W1Thermometer(SENSOR, devices).read_c()
    assert str(e.value) == (f"thermometer {SENSOR} not found in {devices} (the bus has 28-000000000001); check "
                            f"[thermometer] w1_id, and {BUS.removeprefix('check ')}")


def test_an_empty_bus_says_no_sensor_answers(tmp_path):
    (tmp_path / "devices" / "w1_bus_master1").mkdir(parents=True)
    with pytest.raises(HardwareError, match=r"\(no DS18B20 answers on the bus\); check \[thermometer\] w1_id"):
        W1Thermometer(SENSOR, str(tmp_path / "devices")).read_c()


def test_no_bus_at_all_points_at_the_overlay(tmp_path):
    with pytest.raises(HardwareError) as e:
        W1Thermometer(SENSOR, str(tmp_path / "nothing")).read_c()
    assert str(e.value) == (f"thermometer {SENSOR}: there is no 1-wire bus ({tmp_path / 'nothing'} does not "
                            f"exist); {BUS}")


@pytest.mark.parametrize("text", [
    "",
    "hello\n",
    GOOD.splitlines()[0] + "\n",
    "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=\n",
    "72 01 4b 46 7f ff 0e 10 57 : crc=57 MAYBE\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
])
def test_a_malformed_file_is_an_error_that_quotes_it(tmp_path, text):
    devices = sensor_dir(tmp_path, text)
    with pytest.raises(HardwareError) as e:
        W1Thermometer(SENSOR, devices).read_c()
    assert str(e.value) == (f"thermometer {SENSOR}: {devices}/{SENSOR}/w1_slave does not read like a DS18B20 "
                            f"(expected a crc= line and a t= line): {text!r}")


def test_the_config_opens_the_thermometer_it_names(tmp_path):
    devices = sensor_dir(tmp_path, GOOD)
    cfg = parse("[machine]\nid = vm-1\nsecret = 0123456789abcdef\n[cloud]\nurl = http://cloud\n"
                "[hardware]\nbackend = sim\nslots = A1\n"
                f"[sim]\ndisplay_path = {tmp_path / 'screen.png'}\n"
                f"[thermometer]\nw1_id = {SENSOR}\nw1_dir = {devices}\n")
    hardware = open_hardware(cfg)
    try:
        assert hardware.thermometer.read_c() == 23.125
    finally:
        hardware.close()
