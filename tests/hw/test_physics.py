"""Unit tests for hw/physics.py: the slot model every simulator uses, told the time."""

import threading

import pytest

from hw.base import DropSensor
from hw.physics import DOUBLE_DROP_GAP_S, Slot, Turn, slots_from

DELAY, TURN = 0.3, 0.45


def test_a_good_slot_drops_once_and_comes_home():
    slot = Slot(None, DELAY)
    assert slot.turn(10.0, TURN) == Turn(10.0, (10.0 + DELAY,), 10.0 + TURN)
    assert slot.turns == 1


def test_a_jammed_slot_drops_nothing_and_never_comes_home():
    assert Slot("jam", DELAY).turn(10.0, TURN) == Turn(10.0, (), None)


def test_an_empty_slot_turns_fully_and_drops_nothing():
    assert Slot("empty", DELAY).turn(10.0, TURN) == Turn(10.0, (), 10.0 + TURN)


def test_a_double_slot_drops_two_one_after_the_other():
    turn = Slot("double", DELAY).turn(0.0, TURN)
    assert turn.drops == (DELAY, DELAY + DOUBLE_DROP_GAP_S)


def test_cutting_the_power_before_the_drop_keeps_the_product_on_the_spiral():
    turn = Slot("double", DELAY).turn(0.0, TURN)
    assert turn.drops_after_cut(DELAY / 2) == ()


def test_a_product_stuck_to_one_that_fell_follows_it_after_the_cut():
    turn = Slot("double", DELAY).turn(0.0, TURN)
    assert turn.drops_after_cut(DELAY + DOUBLE_DROP_GAP_S / 2) == (DELAY + DOUBLE_DROP_GAP_S,)
    assert Slot(None, DELAY).turn(0.0, TURN).drops_after_cut(DELAY + 0.01) == ()


def test_an_unknown_fault_is_refused():
    with pytest.raises(ValueError, match="fault 'melt'"):
        Slot("melt")


def test_slots_take_their_faults_from_the_sim_section():
    settings = {"jam": ("A2",), "empty": (), "double": ("B1",)}

    class Sim(dict):
        drop_delay_s = DELAY

    slots = slots_from(Sim(settings), ("A1", "A2", "B1"))
    assert {code: s.fault for code, s in slots.items()} == {"A1": None, "A2": "jam", "B1": "double"}
    assert all(s.drop_delay_s == DELAY for s in slots.values())


def test_every_drop_sensor_tells_its_listener_and_wakes_a_waiter():
    sensor = DropSensor()
    heard = []
    sensor.when_drop = heard.append
    threading.Timer(0.05, sensor.drop_seen, args=(12.5,)).start()
    assert sensor.wait_for_drop(2.0)
    assert heard == [12.5]
    assert not sensor.wait_for_drop(0.05)  # each wait is for a new drop
