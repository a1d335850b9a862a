"""Tests of the serial motor board: the frame codec, and the driver against the simulated board over a pty."""

import errno
import subprocess
import sys
import threading
import time
from contextlib import closing

import pytest
import serial
from hypothesis import given
from hypothesis import strategies as st

from controller.config import parse
from hw import HardwareError, open_hardware
from hw.board_protocol import (DROP, MAX_PAYLOAD, RESET, RUN, SOF, STATUS, STOP, FrameReader, crc16, encode,
                               pack)
from hw.board_sim import BoardSim
from hw.serial_board import open_backend

WAIT = 5.0  # generous: the machine is shared; every wait ends as soon as its event comes
SLOTS = "A1 A2 A3 A4"


class Events:
    """Everything the driver delivers (drops, door changes, faults), in order, with a way to wait for it."""

    def __init__(self, hardware):
        self.items: list[tuple] = []
        self._cond = threading.Condition()
        hardware.drop_sensor.when_drop = lambda t: self._add("drop", t)
        hardware.door.when_changed = lambda is_open, t: self._add("door", is_open)
        hardware.faults.listener = lambda code, device, what, t: self._add("fault", what)

    def _add(self, *item) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def of(self, kind: str) -> list:
        with self._cond:
            return [item[1] for item in self.items if item[0] == kind]

    def wait(self, predicate, timeout: float = WAIT) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_fault(self, *words: str) -> str:
        """The first fault whose text has all of ``words``; fails the test if none comes."""
        def match():
            return next((f for f in self.of("fault") if all(w in f for w in words)), None)
        assert self.wait(lambda: match() is not None), f"no fault with {words}; faults: {self.of('fault')}"
        return match()

    def settle(self, sim: BoardSim) -> None:
        """Wait until every report the board sent so far has been delivered, using a door report as a barrier.

        Reports are sent one at a time and delivered in order, so once the door change arrives, nothing
        sent before it is still on its way.
        """
        seen = len(self.of("door"))
        sim.set_door(not sim.door_open)
        assert self.wait(lambda: len(self.of("door")) > seen)


def config(port: str, *, slots: str = SLOTS, extra: str = "", timeout_ms: int = 200, retries: int = 3) -> dict:
    return parse("[machine]\nid = vm-1\nsecret = 0123456789abcdef\n[cloud]\nurl = http://cloud\n"
                 f"[hardware]\nbackend = serial\nslots = {slots}\n"
                 f"[serial]\nport = {port}\ntimeout_ms = {timeout_ms}\nretries = {retries}\n{extra}")


@pytest.fixture
def sim():
    with BoardSim(4, drop_delay_s=0.02, turn_limit_s=0.4, report_resend_s=0.05) as board:
        yield board


@pytest.fixture
def machine(sim):
    hardware = open_backend(config(sim.port))
    events = Events(hardware)
    yield hardware, events
    hardware.close()


def wait_until(predicate, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# The frame codec


def test_crc_is_ccitt_false_with_its_test_vector():
    assert crc16(b"123456789") == 0x29B1


def test_the_frames_in_the_protocol_document_encode_byte_for_byte():
    assert encode(1, STATUS).hex(" ") == "a5 00 01 01 8c ef"
    assert encode(2, RUN, pack("<BH", 2, 0x1234)).hex(" ") == "a5 03 02 02 02 34 12 59 fc"


def test_a_frame_fed_one_byte_at_a_time_decodes_once():
    data = encode(7, RUN, b"\x01\x02\x03")
    reader = FrameReader()
    frames = [frame for i in range(len(data)) for frame in reader.feed(data[i:i + 1], now=0.0)]
    assert [(f.id, f.cmd, f.payload) for f in frames] == [(7, RUN, b"\x01\x02\x03")]
    assert reader.bad_frames == 0


@given(st.binary(max_size=64).map(lambda b: b.replace(bytes((SOF,)), b"")), st.integers(0, 255),
       st.binary(max_size=MAX_PAYLOAD))
def test_garbage_without_a_start_byte_is_skipped(garbage, frame_id, payload):
    reader = FrameReader()
    frames = reader.feed(garbage + encode(frame_id, STOP, payload), now=0.0)
    assert [(f.id, f.payload) for f in frames] == [(frame_id, payload)]
    assert reader.skipped_bytes == len(garbage)


def test_a_false_start_byte_is_discarded_and_the_real_frame_found_after_it():
    reader = FrameReader()
    frames = reader.feed(b"\xa5\x02\x00" + encode(3, STATUS), now=0.0)
    assert [(f.id, f.cmd) for f in frames] == [(3, STATUS)]
    assert reader.bad_crc == 1


def test_a_bad_crc_or_an_impossible_length_is_discarded_and_counted():
    damaged = bytearray(encode(4, RUN, b"\x00\x01\x00"))
    damaged[-1] ^= 0x01
    reader = FrameReader()
    assert reader.feed(bytes(damaged), now=0.0) == []
    assert reader.bad_crc == 1
    assert reader.feed(bytes((SOF, MAX_PAYLOAD + 1, 0, RUN)), now=0.0) == []
    assert reader.bad_length == 1
    assert [f.id for f in reader.feed(encode(5, RESET), now=0.0)] == [5]


def test_a_frame_whose_tail_never_comes_expires_and_the_next_one_is_read():
    reader = FrameReader(stall_s=0.25)
    assert reader.feed(encode(1, STATUS)[:3], now=10.0) == []
    assert reader.feed(b"", now=10.2) == []
    assert reader.stalled == 0
    assert reader.feed(b"", now=10.3) == []
    assert reader.stalled == 1
    assert [f.id for f in reader.feed(encode(2, STATUS), now=10.4)] == [2]


# The driver against the simulated board


def test_open_says_hello_resets_the_board_and_runs_nothing(sim, machine):
    hardware, _ = machine
    assert sorted(hardware.motors) == ["A1", "A2", "A3", "A4"]
    assert not any(motor.is_running for motor in hardware.motors.values())
    # By frame id, so a resend on a slow machine does not count as a request of its own.
    assert [cmd for _, cmd in dict.fromkeys(sim.requests)] == [STATUS, RESET, STATUS]
    assert sum(sim.runs.values()) == 0


def test_a_run_drops_once(sim, machine):
    hardware, events = machine
    before = time.monotonic()
    hardware.motors["A1"].run()
    assert events.wait(lambda: events.of("drop"))
    assert wait_until(lambda: not hardware.motors["A1"].is_running)
    events.settle(sim)
    assert len(events.of("drop")) == 1
    assert before <= events.of("drop")[0] <= time.monotonic()
    assert sim.runs == {0: 1}
    assert events.of("fault") == []


def test_a_jammed_slot_gives_no_drop_and_a_time_limit_fault(sim, machine):
    hardware, events = machine
    sim.set_mode(1, "jam")
    hardware.motors["A2"].run()
    fault = events.wait_fault("time limit")
    assert "slot A2" in fault and "jammed" in fault
    assert not hardware.motors["A2"].is_running
    events.settle(sim)
    assert events.of("drop") == []


def test_an_empty_slot_turns_fully_with_no_drop_and_no_fault(sim, machine):
    hardware, events = machine
    sim.set_mode(3, "empty")
    hardware.motors["A4"].run()
    assert wait_until(lambda: sim.runs[3] == 1 and not hardware.motors["A4"].is_running)
    events.settle(sim)
    assert events.of("drop") == []
    assert events.of("fault") == []


def test_a_double_slot_drops_twice(sim, machine):
    hardware, events = machine
    sim.set_mode(2, "double")
    hardware.motors["A3"].run()
    assert events.wait(lambda: len(events.of("drop")) >= 2)
    events.settle(sim)
    drops = events.of("drop")
    assert len(drops) == 2 and drops[1] > drops[0]
    assert sim.runs == {2: 1}


def test_garbage_between_frames_is_skipped(sim, machine):
    hardware, events = machine
    sim.garbage()
    hardware.motors["A1"].run()
    sim.garbage(b"\x00\x01\x02 line noise \xff")
    assert events.wait(lambda: events.of("drop"))
    events.settle(sim)
    assert len(events.of("drop")) == 1
    assert sim.runs == {0: 1}
    frames = hardware.motors["A1"].board.frames
    assert frames.skipped_bytes >= len(b"\x00\x01\x02 line noise \xff")
    assert frames.bad_crc >= 1  # the garbage's false start byte


def test_a_reply_with_a_bad_crc_is_discarded_and_the_request_succeeds_by_resend(sim, machine):
    hardware, events = machine
    sim.corrupt_next(1)
    hardware.motors["A1"].run()
    ids = sim.heard(RUN)
    assert len(ids) >= 2 and len(set(ids)) == 1  # resent with the same frame id
    assert sim.runs == {0: 1}
    assert sim.cache_hits >= 1
    fault = events.wait_fault("damaged frames", "bad CRC")
    assert "check the cable" in fault


def test_unanswered_requests_are_resent_with_the_same_frame_id_and_the_motor_runs_once(sim, machine):
    hardware, events = machine
    sim.ignore_requests(2)
    hardware.motors["A2"].run()
    ids = sim.heard(RUN)
    assert len(ids) >= 3 and len(set(ids)) == 1
    assert sim.runs == {1: 1}
    assert events.wait(lambda: events.of("drop"))
    events.settle(sim)
    assert len(events.of("drop")) == 1


def test_a_reset_in_the_middle_of_a_vend_is_a_fault_and_leaves_the_motor_off(sim, machine):
    hardware, events = machine
    sim.reset_in_next_turn()
    hardware.motors["A3"].run()
    fault = events.wait_fault("restarted", "in the middle of a turn")
    assert "slot A3" in fault
    assert not hardware.motors["A3"].is_running
    assert sim.running is None
    events.settle(sim)
    assert events.of("drop") == []
    # The driver follows the board into its new boot: the next vend works.
    hardware.motors["A1"].run()
    assert events.wait(lambda: events.of("drop"))
    assert sim.runs == {2: 1, 0: 1}


def test_a_run_addressed_to_a_previous_boot_runs_nothing(sim, machine):
    hardware, _ = machine
    board = hardware.motors["A1"].board
    board.boot_id ^= 0x5555  # as if the board had restarted and its BOOT report were still on its way
    with pytest.raises(HardwareError, match=r"restarted; motor 0 \(slot A1\) was not run"):
        hardware.motors["A1"].run()
    assert sim.heard(RUN) and sum(sim.runs.values()) == 0


def test_a_report_the_board_resends_is_delivered_once(sim, machine):
    hardware, events = machine
    sim.lose_report_acks(2)
    hardware.motors["A1"].run()
    assert events.wait(lambda: events.of("drop"))
    events.settle(sim)
    assert len(events.of("drop")) == 1
    drop_sends = [n for (cmd, _, _), n in sim.report_sends.items() if cmd == DROP]
    assert drop_sends and drop_sends[0] >= 3  # the one DROP went out three times: two acks were lost


def test_the_door_is_read_at_open_and_reported_when_it_changes(machine, sim):
    hardware, events = machine
    assert not hardware.door.is_open
    sim.set_door(True)
    assert events.wait(lambda: events.of("door") == [True])
    assert hardware.door.is_open


def test_stop_ends_a_turn_and_is_safe_from_many_threads_many_times(sim, machine):
    hardware, events = machine
    sim.turn_s = sim.turn_limit_s = 30.0
    hardware.motors["A1"].run()
    assert hardware.motors["A1"].is_running
    errors = []

    def stop():
        try:
            for _ in range(3):
                hardware.motors["A1"].stop()
        except Exception as e:  # the contract: stop never raises
            errors.append(e)
    threads = [threading.Thread(target=stop) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert errors == []
    assert not hardware.motors["A1"].is_running
    assert sim.running is None
    events.settle(sim)
    assert events.of("fault") == []  # a turn the host stopped is no fault


def test_a_second_motor_is_refused_while_one_turns():
    with BoardSim(2, drop_delay_s=0.02, turn_s=30.0, turn_limit_s=60.0) as sim:
        with closing(open_backend(config(sim.port, slots="A1 A2"))) as hardware:
            hardware.motors["A1"].run()
            assert hardware.motors["A1"].is_running
            with pytest.raises(HardwareError, match="another motor is turning"):
                hardware.motors["A2"].run()
            assert sim.runs == {0: 1}
            hardware.all_motors_off()
            assert sim.running is None
            assert not hardware.motors["A1"].is_running


def test_a_new_session_stops_a_motor_left_turning_by_the_last_one():
    with BoardSim(2, drop_delay_s=0.02, turn_s=30.0, turn_limit_s=60.0) as sim:
        first = open_backend(config(sim.port, slots="A1 A2"))
        first.motors["A2"].run()
        first.motors["A2"].board.close()  # the controller died: the port closed, no motor stopped
        assert sim.running == 1
        with closing(open_backend(config(sim.port, slots="A1 A2"))):
            assert sim.running is None


def test_all_motors_off_on_a_board_gone_silent_does_not_raise(sim, machine):
    hardware, events = machine
    sim.ignore_requests(1000)
    hardware.all_motors_off()
    events.wait_fault("no answer to STOP")
    # Known silent, the board gets one try per motor: 4 x 0.2 s, not 4 x (1 + 3 retries) x 0.2 s.
    started = time.monotonic()
    hardware.all_motors_off()
    assert time.monotonic() - started < 2.5
    assert len([f for f in events.of("fault") if "no answer to STOP" in f]) == 1


def test_a_run_with_no_answer_raises_and_is_a_fault(sim, machine):
    hardware, events = machine
    sim.ignore_requests(1000)
    with pytest.raises(HardwareError, match="no answer to RUN motor 0 \\(slot A1\\)"):
        hardware.motors["A1"].run()
    events.wait_fault("no answer to RUN")


# Bad input: each error names the port and what to check


def test_a_port_that_does_not_exist(tmp_path):
    port = str(tmp_path / "ttyNOPE")
    with pytest.raises(HardwareError) as info:
        open_backend(config(port))
    assert port in str(info.value)
    assert "check [serial] port" in str(info.value) and "UART" in str(info.value)


def test_a_port_in_use_by_another_process(sim):
    with serial.Serial(sim.port, exclusive=True):
        with pytest.raises(HardwareError) as info:
            open_backend(config(sim.port))
    assert sim.port in str(info.value)
    assert "in use by another process" in str(info.value) and "vend-controller" in str(info.value)
    assert sim.requests == [] and sum(sim.runs.values()) == 0


def test_a_port_without_permission_says_which_group(monkeypatch):
    # Tests run as root here, where a chmod cannot deny anything; pyserial's error is what the driver sees.
    def denied(port, **kwargs):
        raise serial.SerialException(errno.EACCES, f"could not open port {port}: [Errno 13] Permission denied")
    monkeypatch.setattr(serial, "serial_for_url", denied)
    with pytest.raises(HardwareError) as info:
        open_backend(config("/dev/ttyAMA0"))
    assert "/dev/ttyAMA0" in str(info.value) and "dialout group" in str(info.value)


def test_a_board_that_never_answers(sim):
    sim.ignore_requests(1000)
    with pytest.raises(HardwareError) as info:
        open_backend(config(sim.port, timeout_ms=50, retries=2))
    message = str(info.value)
    assert sim.port in message
    assert "TX/RX wiring" in message and "baud" in message and "power" in message
    assert sim.heard(STATUS) and not sim.heard(RUN) and sum(sim.runs.values()) == 0
    # The failed open let go of the port.
    with serial.Serial(sim.port, exclusive=True):
        pass


def test_slots_mapped_past_the_boards_motors_are_refused(sim):
    with pytest.raises(HardwareError, match="has 4 motors"):
        open_backend(config(sim.port, slots="A1 A2", extra="motors = A1:0 A2:9\n"))


# The whole path a controller takes


def test_open_hardware_with_a_parsed_config_runs_the_mapped_motor(tmp_path):
    with BoardSim(4, drop_delay_s=0.02, door_open=True) as sim:
        cfg = config(sim.port, slots="A1 A2", extra=f"motors = A1:3 A2:0\n[screen]\ndisplay = png\n"
                                                     f"[sim]\ndisplay_path = {tmp_path / 'screen.png'}\n")
        hardware = open_hardware(cfg)
        try:
            events = Events(hardware)
            assert hardware.display.path == str(tmp_path / "screen.png")
            assert hardware.door.is_open
            # What `vendctl hw pins` shows a technician: the motor map and the board's live inputs.
            assert ("motor A1", "board motor 3") in hardware.wiring
            assert hardware.inputs()["door"] == "open" and hardware.inputs()["motor running"] == "none"
            hardware.motors["A1"].run()
            assert events.wait(lambda: events.of("drop"))
            assert sim.runs == {3: 1}
        finally:
            hardware.close()
        with serial.Serial(sim.port, exclusive=True):  # closing the hardware closed the port
            pass


def test_the_simulator_runs_from_the_command_line_for_a_person():
    proc = subprocess.Popen([sys.executable, "-m", "hw.board_sim", "--motors", "2", "--jam", "1",
                             "--drop-delay", "0.02", "--turn-limit", "0.3"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = proc.stdout.readline().split()[-1]
        hardware = open_backend(config(port, slots="A1 A2"))
        try:
            events = Events(hardware)
            hardware.motors["A2"].run()
            events.wait_fault("time limit", "slot A2")
        finally:
            hardware.close()
        out, _ = proc.communicate("stats\nquit\n", timeout=WAIT)
        assert "motor 1: 1" in out
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
