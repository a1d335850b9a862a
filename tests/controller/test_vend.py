"""Unit tests for controller/vend.py: the vend state machine, driven by a fake clock (plain floats)."""

import pytest

from controller.vend import Busy, Finished, Record, RunMotor, StopMotor, VendStateMachine
from protocol.messages import GENESIS_HASH, Event, utcnow

TIMEOUT = 3.0
T0 = 100.0


def started(turns=2):
    """A machine with a vend of order o-1 (cmd c-1) on slot A1 started at T0."""
    sm = VendStateMachine(drop_timeout_s=TIMEOUT, turns=turns)
    sm.start("c-1", "o-1", "A1", T0)
    return sm


def test_start_records_vend_started_before_running_the_motor():
    sm = VendStateMachine(drop_timeout_s=TIMEOUT)
    actions = sm.start("c-1", "o-1", "A1", T0)
    assert actions == [Record("vend.started", {"order_id": "o-1", "cmd_id": "c-1", "slot": "A1"}),
                       RunMotor("A1")]
    assert sm.busy
    assert sm.deadline == T0 + TIMEOUT


def test_idle_machine_is_not_busy_and_has_no_deadline():
    sm = VendStateMachine(drop_timeout_s=TIMEOUT)
    assert not sm.busy
    assert sm.deadline is None
    assert sm.timer_fired(T0) == []


def test_drop_during_turn_one_succeeds_with_one_turn():
    sm = started()
    actions = sm.drop_seen(T0 + 0.5)
    assert len(actions) == 3
    stop, record, finished = actions
    assert stop == StopMotor("A1")
    assert record.kind == "vend.succeeded"
    assert record.data["turns"] == 1
    assert record.data["order_id"] == "o-1" and record.data["cmd_id"] == "c-1" and record.data["slot"] == "A1"
    assert record.data["ms"] == 500
    assert finished == Finished("c-1", "o-1", "succeeded")
    assert not sm.busy and sm.deadline is None


def test_timer_fired_before_the_deadline_does_nothing():
    sm = started()
    assert sm.timer_fired(T0) == []
    assert sm.timer_fired(T0 + TIMEOUT - 0.001) == []
    assert sm.busy
    assert sm.deadline == T0 + TIMEOUT


def test_no_drop_after_turn_one_retries_with_a_new_deadline():
    sm = started()
    t = T0 + TIMEOUT + 0.2
    assert sm.timer_fired(t) == [StopMotor("A1"), RunMotor("A1")]
    assert sm.busy
    assert sm.deadline == t + TIMEOUT
    # The old deadline has passed, but the new one has not: nothing more happens yet.
    assert sm.timer_fired(t + TIMEOUT - 0.001) == []


def test_drop_during_turn_two_succeeds_with_two_turns():
    sm = started()
    sm.timer_fired(T0 + TIMEOUT)
    actions = sm.drop_seen(T0 + TIMEOUT + 1.0)
    assert actions[0] == StopMotor("A1")
    assert actions[1].kind == "vend.succeeded"
    assert actions[1].data["turns"] == 2
    assert actions[1].data["ms"] == round((TIMEOUT + 1.0) * 1000)
    assert actions[2] == Finished("c-1", "o-1", "succeeded")
    assert not sm.busy


def test_no_drop_after_both_turns_fails_with_a_reason_then_idles():
    sm = started()
    sm.timer_fired(T0 + TIMEOUT)
    actions = sm.timer_fired(T0 + 2 * TIMEOUT)
    assert len(actions) == 3
    stop, record, finished = actions
    assert stop == StopMotor("A1")
    assert record.kind == "vend.failed"
    assert record.data["order_id"] == "o-1" and record.data["slot"] == "A1"
    assert record.data["turns"] == 2
    assert isinstance(record.data["reason"], str) and record.data["reason"]
    assert "2 turns" in record.data["reason"]
    assert finished == Finished("c-1", "o-1", "failed")
    assert not sm.busy and sm.deadline is None
    assert sm.timer_fired(T0 + 10 * TIMEOUT) == []


def test_one_turn_config_fails_after_a_single_turn():
    sm = started(turns=1)
    actions = sm.timer_fired(T0 + TIMEOUT)
    assert RunMotor("A1") not in actions
    assert actions[1].kind == "vend.failed"
    assert actions[1].data["turns"] == 1
    assert "1 turn" in actions[1].data["reason"]
    assert actions[2].outcome == "failed"
    assert not sm.busy


def test_starting_while_busy_raises_busy_and_keeps_the_first_vend():
    sm = started()
    with pytest.raises(Busy, match="o-1"):
        sm.start("c-2", "o-2", "A2", T0 + 0.1)
    actions = sm.drop_seen(T0 + 0.2)
    assert actions[2] == Finished("c-1", "o-1", "succeeded")


def test_a_new_vend_can_start_after_the_last_one_finished():
    sm = started()
    sm.drop_seen(T0 + 0.5)
    actions = sm.start("c-2", "o-2", "A2", T0 + 1.0)
    assert actions[-1] == RunMotor("A2")
    assert sm.deadline == T0 + 1.0 + TIMEOUT


def test_drop_while_idle_records_drop_unexpected():
    sm = VendStateMachine(drop_timeout_s=TIMEOUT)
    assert sm.drop_seen(T0) == [Record("drop.unexpected", {})]
    assert not sm.busy


def test_second_drop_after_success_is_unexpected():
    sm = started()
    sm.drop_seen(T0 + 0.5)
    assert sm.drop_seen(T0 + 0.55) == [Record("drop.unexpected", {})]


def test_recover_turns_an_interrupted_vend_started_into_vend_unknown():
    ev = Event.make(7, utcnow(), 3, True, "vend.started", {"order_id": "o-9", "cmd_id": "c-9", "slot": "B2"},
                    GENESIS_HASH)
    actions = VendStateMachine.recover(ev)
    assert actions == [Record("vend.unknown", {"order_id": "o-9", "cmd_id": "c-9", "slot": "B2",
                                               "started_seq": 7})]
    # No motor is touched when recovering.
    assert not any(isinstance(a, (RunMotor, StopMotor)) for a in actions)


def test_a_machine_that_says_nothing_dropped_fails_the_vend_at_once_without_a_retry():
    sm = VendStateMachine(drop_timeout_s=3.0, turns=2)
    sm.start("c1", "o1", "A2", now=0.0)
    actions = sm.not_dropped(1.0, "the machine reported that the vend failed (c,VEND,FAIL)")
    assert actions == [StopMotor("A2"),
                       Record("vend.failed", {"order_id": "o1", "cmd_id": "c1", "slot": "A2", "turns": 1,
                                              "reason": "the machine reported that the vend failed (c,VEND,FAIL)"}),
                       Finished("c1", "o1", "failed")]
    assert not sm.busy and sm.timer_fired(10.0) == []
    assert sm.not_dropped(11.0, "late") == []  # no vend in progress: nothing to fail


def test_a_failure_that_says_nothing_against_the_slot_says_so_in_the_ledger():
    sm = VendStateMachine(drop_timeout_s=3.0, turns=1)
    sm.start("c1", "o1", "A2", now=0.0)
    _, record, _ = sm.not_dropped(1.0, "the session was cancelled at the machine", slot_ok=True)
    assert record.data["slot_ok"] is True and record.data["reason"] == "the session was cancelled at the machine"
