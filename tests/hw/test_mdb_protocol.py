"""The MDB adapter's line protocol and the cashless session's policy, with a fake clock and no port.

What a customer and an operator would see: a vend is approved only for the selection paid for at no more
than the price; every other ending (failure, cancel, reset, silence, a line that makes no sense) closes the
session without approving anything and says why.
"""

import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from hw.mdb_protocol import (AdapterError, Cashless, Fault, Garbled, Ignored, LineReader, NotVended, Send, State,
                             Unknown, VendRequest, VendResult, Vended, from_minor, parse_line, to_minor)


def test_amounts_are_exact_minor_units():
    assert to_minor("3.50", 2) == 350
    assert to_minor("1", 2) == 100
    assert to_minor("0.05", 2) == 5
    assert to_minor("350", 0) == 350
    assert to_minor("3.505", 2) is None  # more places than the machine uses: not rounded, refused
    assert to_minor("-1.00", 2) is None
    assert to_minor("1e3", 2) is None
    assert to_minor("", 2) is None
    assert from_minor(350, 2) == "3.50" and from_minor(5, 2) == "0.05" and from_minor(7, 0) == "7"
    assert from_minor(1234, 3) == "1.234"


def test_the_adapters_lines():
    assert parse_line(b"c,STATUS,ENABLED") == State("ENABLED")
    assert parse_line(b"c,STATUS,IDLE\r") == State("IDLE")
    assert parse_line(b"c,STATUS,VEND,3.50,12") == VendRequest(350, 12, "c,STATUS,VEND,3.50,12")
    assert parse_line(b"c,VEND,SUCCESS") == VendResult(True, "c,VEND,SUCCESS")
    assert parse_line(b"c,VEND,FAIL") == VendResult(False, "c,VEND,FAIL")
    assert parse_line(b"c,ERR,VEND 3") == AdapterError("VEND 3", "c,ERR,VEND 3")
    assert parse_line(b"r,ACK") == Ignored("r,ACK")
    assert parse_line(b"c,1") == Ignored("c,1")  # the adapter's word back on C,1
    assert parse_line(b"") == Ignored("")


def test_lines_that_make_no_sense_say_why():
    assert parse_line(b"c,STATUS,VEND,abc,12").why.startswith("amount 'abc' is not a price")
    assert "selection 'x1'" in parse_line(b"c,STATUS,VEND,1.00,x1").why
    assert "amount and a selection" in parse_line(b"c,STATUS,VEND,1.00").why
    assert parse_line(b"\xff\x00c,STATUS").why == "not ASCII text"
    assert parse_line(b"c,STA\x13TUS").why == "control characters in the line"
    assert "start with 'c,'" in parse_line(b"hello").why
    assert parse_line(b"c,STATUS,REVALUE") == Unknown("c,STATUS,REVALUE")
    assert parse_line(b"c,FOO") == Unknown("c,FOO")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_no_bytes_crash_the_parser(data):
    parse_line(data)
    reader = LineReader()
    reader.feed(data, 0.0)
    reader.feed(b"", 5.0)


def test_line_reader_splits_on_any_line_end_and_reports_cut_and_overlong_lines():
    reader = LineReader(stall_s=1.0)
    assert reader.feed(b"c,STATUS,ENABLED\r\nc,STATUS,ID", 0.0) == [State("ENABLED")]
    assert reader.feed(b"LE\n", 0.5) == [State("IDLE")]
    cut = reader.feed(b"c,STATUS,VEND,3.5", 1.0) + reader.feed(b"", 2.5)
    assert len(cut) == 1 and isinstance(cut[0], Garbled) and cut[0].why.startswith("cut short")
    # The rest of the cut line, arriving late, is a line of its own that makes no sense either.
    assert isinstance(reader.feed(b"0,2\n", 3.0)[0], Garbled)
    long = reader.feed(b"c," + b"9" * 200 + b"\n", 4.0)
    assert isinstance(long[0], Garbled) and "longer than" in long[0].why
    assert reader.bad_lines == 3


def session(credit=350, item=2, state="ENABLED"):
    """A policy whose adapter is enabled, with a session opened and begun for slot A2."""
    p = Cashless(answer_timeout_s=2, session_timeout_s=60, vend_timeout_s=30)
    p.line(State(state), 0.0)
    assert p.start("A2", item, credit, 1.0) == [Send(f"C,START,{from_minor(credit, 2)}")]
    assert p.line(State("IDLE"), 1.1) == []
    assert p.session.phase == "waiting"
    return p


def sent(actions):
    return [a.line for a in actions if isinstance(a, Send)]


def ended(actions):
    return next((a.reason for a in actions if isinstance(a, NotVended)), None)


def test_the_paid_selection_is_approved_and_its_success_is_the_drop():
    p = session()
    assert p.line(parse_line(b"c,STATUS,VEND,3.50,2"), 5.0) == [Send("C,VEND,3.50")]
    assert p.line(parse_line(b"c,VEND,SUCCESS"), 7.0) == [Vended()]
    assert p.session is None
    assert p.line(State("IDLE"), 7.1) == [] and p.line(State("ENABLED"), 7.2) == []
    assert p.prices == {2: 350}


def test_a_vend_failure_ends_the_session_unpaid():
    p = session()
    p.line(parse_line(b"c,STATUS,VEND,3.50,2"), 5.0)
    actions = p.line(parse_line(b"c,VEND,FAIL"), 6.0)
    assert actions == [NotVended("the machine reported that the vend failed (c,VEND,FAIL)", slot_ok=False)]
    p = session()
    p.line(parse_line(b"c,STATUS,VEND,3.50,2"), 5.0)
    assert "c,ERR,VEND 3" in ended(p.line(parse_line(b"c,ERR,VEND 3"), 6.0))
    assert p.session is None


def test_a_different_selection_or_a_higher_price_is_denied():
    p = session()
    actions = p.line(parse_line(b"c,STATUS,VEND,3.50,3"), 5.0)
    assert sent(actions) == ["C,STOP"]
    assert ended(actions) == ("denied: the customer selected 3 at the machine, not 2 (slot A2) that they paid for")
    p = session()
    actions = p.line(parse_line(b"c,STATUS,VEND,4.00,2"), 5.0)
    assert sent(actions) == ["C,STOP"] and "asks 4.00 for selection 2, more than the 3.50 paid" in ended(actions)
    assert p.session is None and p.approved == 0


def test_a_lower_price_is_approved_and_the_difference_reported():
    p = session(credit=350)
    actions = p.line(parse_line(b"c,STATUS,VEND,3.00,2"), 5.0)
    assert sent(actions) == ["C,VEND,3.00"]
    fault = next(a for a in actions if isinstance(a, Fault))
    assert fault.code == "mdb.price_differs" and "at 3.00, the planogram at 3.50" in fault.what


def test_a_vend_request_with_no_paid_session_is_denied():
    p = Cashless()
    p.line(State("ENABLED"), 0.0)
    assert p.line(parse_line(b"c,STATUS,VEND,3.50,2"), 1.0) == [Send("C,STOP")]
    assert p.denied == 1 and p.approved == 0


def test_a_cancel_a_reset_and_the_timeouts_each_end_the_session_unpaid():
    p = session()
    assert p.line(State("ENABLED"), 5.0) == [NotVended("the session was cancelled at the machine before a selection",
                                                       slot_ok=True)]
    p = session()
    p.line(parse_line(b"c,STATUS,VEND,3.50,2"), 5.0)
    actions = p.line(State("INACTIVE"), 6.0)
    assert "reset or disabled the cashless device in the middle of the vend" in ended(actions)
    assert [a.code for a in actions if isinstance(a, Fault)] == ["mdb.vmc_reset"]
    assert actions[-1].slot_ok is False  # the machine had been told to vend: its spiral is in doubt
    assert p.state == "INACTIVE"
    p = session()
    assert p.tick(60.0) == []
    actions = p.tick(61.2)
    assert sent(actions) == ["C,STOP"] and "no selection at the machine within 60 s" in ended(actions)
    p = session()
    p.line(parse_line(b"c,STATUS,VEND,3.50,2"), 5.0)
    assert "did not report the vend's outcome within 30 s" in ended(p.tick(35.1))


def test_an_adapter_that_never_answers_start():
    p = Cashless(answer_timeout_s=2)
    p.line(State("ENABLED"), 0.0)
    p.start("A2", 2, 350, 1.0)
    assert p.tick(2.9) == []
    actions = p.tick(3.1)
    assert "did not answer C,START within 2 s" in ended(actions)
    assert [a.code for a in actions if isinstance(a, Fault)] == ["mdb.no_answer"]


def test_no_session_before_the_machine_enables_the_cashless_device():
    p = Cashless()
    assert ended(p.start("A1", 1, 200, 0.0)) == ("the machine's controller has not enabled the cashless device "
                                                 "(it is UNKNOWN)")
    p.line(State("DISABLED"), 0.0)
    assert "(it is DISABLED)" in ended(p.start("A1", 1, 200, 0.0))
    assert p.session is None


BAD_LINES = [b"c,STATUS,VEND,abc,2", b"c,STATUS,VEND,3.50", b"\x00\xffc,STA", b"c,STATUS,BOGUS", b"garbage!!",
             b"c," + b"9" * 300]


def test_garbled_unknown_and_partial_lines_close_the_session_and_approve_nothing(caplog):
    for bad in BAD_LINES:
        p = session()
        reader = LineReader()
        with caplog.at_level(logging.WARNING, logger="hw.mdb_protocol"):
            actions = [a for m in reader.feed(bad + b"\n", 2.0) for a in p.line(m, 2.0)]
        assert "C,VEND" not in " ".join(sent(actions)), bad
        assert sent(actions) == ["C,STOP"], bad
        assert "makes no sense during the vend" in ended(actions), bad
        assert p.session is None and p.approved == 0
        assert "MDB adapter sent" in caplog.text
        caplog.clear()
    # A line cut short in the middle of the session: the same, once the line has stalled.
    p = session()
    reader = LineReader(stall_s=1.0)
    actions = [a for m in reader.feed(b"c,STATUS,VEND,3.", 2.0) + reader.feed(b"", 3.5) for a in p.line(m, 3.5)]
    assert sent(actions) == ["C,STOP"] and "cut short" in ended(actions) and p.session is None


def test_bad_lines_outside_a_session_are_logged_and_change_nothing(caplog):
    p = Cashless()
    p.line(State("ENABLED"), 0.0)
    reader = LineReader()
    with caplog.at_level(logging.WARNING, logger="hw.mdb_protocol"):
        for bad in BAD_LINES:
            for m in reader.feed(bad + b"\n", 1.0):
                assert p.line(m, 1.0) == []
    assert p.state == "ENABLED" and p.session is None
    assert caplog.text.count("MDB adapter sent") == len(BAD_LINES)
    # The next customer's session works as before.
    assert p.start("A1", 1, 200, 2.0) == [Send("C,START,2.00")]


def test_a_late_success_after_the_session_ended_is_a_drop_but_no_sale():
    p = session()
    p.line(parse_line(b"c,STATUS,VEND,3.50,2"), 5.0)
    p.tick(40.0)  # the outcome did not come in time: the vend is voided
    assert p.line(parse_line(b"c,VEND,SUCCESS"), 41.0) == [Vended()]  # recorded as drop.unexpected
    assert p.session is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"c,STATUS,ENABLED", b"c,STATUS,IDLE", b"c,STATUS,INACTIVE", b"c,STATUS,VEND,3.50,3",
                                 b"c,STATUS,VEND,9.99,2", b"c,VEND,SUCCESS", b"c,VEND,FAIL", b"c,ERR,X", b"r,ACK",
                                 b"c,STATUS,VEND,x,2", b"\xff"]), max_size=20))
def test_only_the_paid_selection_is_ever_approved(lines):
    p = session()
    approvals = []
    for i, line in enumerate(lines):
        approvals += [a.line for a in p.line(parse_line(line), 2.0 + i) if isinstance(a, Send)
                      and a.line.startswith("C,VEND")]
    assert approvals == []  # none of these lines is the paid selection (2) at or under its price
