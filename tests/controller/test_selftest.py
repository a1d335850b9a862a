"""The self-test's settling rules with a fake clock: the broker and the clock waited for up to selftest_wait_s,
each failure with its reason; the checks of the simulated hardware."""

from controller.config import parse
from controller.selftest import SelfTest, hardware_checks
from hw import open_hardware

CONFIG = """[machine]
id = st-1
secret = 0123456789abcdef
[cloud]
url = http://cloud.invalid
[hardware]
backend = sim
slots = A1 A2
[sim]
display_path = {tmp}/screen.png
"""


def test_the_simulated_hardware_passes_its_checks(tmp_path):
    cfg = parse(CONFIG.format(tmp=tmp_path))
    hardware = open_hardware(cfg)
    try:
        checks = {c.name: (c.ok, c.detail) for c in hardware_checks(hardware)}
        hardware.door.set_open(True)
        door = {c.name: c.detail for c in hardware_checks(hardware)}["door"]
    finally:
        hardware.close()
    assert checks == {"pins": (True, "2 motor outputs claimed and off (simulated)"),
                      "drop sensor": (True, "beam clear"), "door": (True, "door shut"),
                      "thermometer": (True, "none configured")}
    assert door == "door open"


def test_no_broker_and_no_clock_fail_with_their_reasons_after_the_wait(tmp_path):
    test = SelfTest(100.0, 30.0, [], "mqtt.example.com:8883", ntp_flag=str(tmp_path / "no-flag"))
    assert not test.update(110.0, False, False, "")
    assert [c.ok for c in test.lines()] == [None, None]  # still checking: grey on the screen
    assert test.update(130.0, False, False, "refused: Bad user name or password")
    broker, clock = test.lines()
    assert broker.ok is False and broker.detail == ("mqtt.example.com:8883: no connection in 30 s (refused: Bad user "
                                                    "name or password); still trying")
    assert clock.ok is False and "no NTP answer and no word from the cloud" in clock.detail
    assert test.event_data()["passed"] is False


def test_a_connection_and_ntp_pass_before_the_wait_is_over(tmp_path):
    flag = tmp_path / "synchronized"
    test = SelfTest(100.0, 30.0, [], "localhost:1883", ntp_flag=str(flag))
    assert not test.update(101.0, True, False, "")
    flag.touch()
    assert test.update(102.5, True, False, "")
    assert [(c.name, c.ok, c.detail) for c in test.lines()] == [
        ("broker", True, "localhost:1883 connected after 1.0 s"), ("clock", True, "set by NTP")]


def test_the_clouds_clock_sets_the_clock_without_ntp(tmp_path):
    test = SelfTest(0.0, 30.0, [], "b:1", ntp_flag=str(tmp_path / "none"))
    assert test.update(2.0, True, True, "")
    assert test.lines()[1].detail == "set from the cloud's clock (no NTP answer yet)" and test.passed
