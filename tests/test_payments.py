"""The embedded wallet (cloud/payments.py): double-entry legs, idempotency keys, and the money invariant."""

import tempfile
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud import payments
from cloud.payments import MAX_TOPUP, PaymentError, Wallet, account, balance, entries, post, txns
from cloud_fixtures import NOW, engine, make_migrated_engine, unbalanced_txns  # noqa: F401

W = Wallet()


def order(order_id, customer_id, amount, currency="CNY"):
    return SimpleNamespace(id=order_id, customer_id=customer_id, amount=amount, currency=currency)


def hold_of(conn, customer_id, currency="CNY"):
    return balance(conn, account(conn, "hold", customer_id, currency))


def revenue(conn, currency="CNY"):
    return balance(conn, account(conn, "revenue", 0, currency))


def count(conn, table):
    return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def test_topup_adds_to_the_wallet_balance(engine):
    with engine.begin() as conn:
        assert W.balance(conn, 1, "CNY") == 0
        outcome = W.topup(conn, 1, 1250, "CNY", "k1", NOW)
        assert outcome.ok and outcome.created
        W.topup(conn, 1, 50, "CNY", "k2", NOW)
        assert W.balance(conn, 1, "CNY") == 1300
        assert W.balance(conn, 1, "USD") == 0  # one wallet per currency
        assert W.balance(conn, 2, "CNY") == 0


def test_the_same_topup_key_twice_moves_money_once(engine):
    with engine.begin() as conn:
        W.topup(conn, 1, 500, "CNY", "same", NOW)
        outcome = W.topup(conn, 1, 500, "CNY", "same", NOW)
        assert outcome.ok and not outcome.created
        assert W.balance(conn, 1, "CNY") == 500
        assert count(conn, txns) == 1 and count(conn, entries) == 2


def test_post_returns_false_for_a_used_key_and_leaves_balances_alone(engine):
    with engine.begin() as conn:
        a, b = account(conn, "wallet", 1, "CNY"), account(conn, "topup_clearing", 0, "CNY")
        assert post(conn, "k", "topup", [(a, 70), (b, -70)], NOW) is True
        assert post(conn, "k", "topup", [(a, 70), (b, -70)], NOW) is False
        assert post(conn, "k", "topup", [(a, 999), (b, -999)], NOW) is False  # the key, not the legs, decides
        assert (balance(conn, a), balance(conn, b)) == (70, -70)
        assert count(conn, entries) == 2


def test_post_refuses_legs_that_do_not_balance(engine):
    with engine.begin() as conn:
        a, b = account(conn, "wallet", 1, "CNY"), account(conn, "revenue", 0, "CNY")
        with pytest.raises(PaymentError, match="does not balance"):
            post(conn, "bad", "topup", [(a, 10), (b, -9)], NOW)
        assert count(conn, txns) == 0


def test_account_is_created_once_per_owner_and_currency(engine):
    with engine.begin() as conn:
        first = account(conn, "wallet", 7, "CNY")
        assert account(conn, "wallet", 7, "CNY") == first
        assert len({first, account(conn, "hold", 7, "CNY"), account(conn, "wallet", 7, "USD")}) == 3


def test_authorise_with_a_short_balance_is_declined_with_the_reason(engine):
    with engine.begin() as conn:
        W.topup(conn, 1, 100, "CNY", "k", NOW)
        outcome = W.authorise(conn, order("o1", 1, 350), NOW)
        assert not outcome.ok
        assert outcome.reason == "not enough in the wallet (100 < 350)"
        assert W.balance(conn, 1, "CNY") == 100 and hold_of(conn, 1) == 0
        assert conn.execute(sa.select(txns).where(txns.c.order_id == "o1")).first() is None


def test_authorise_moves_money_to_a_hold_and_capture_to_revenue_once(engine):
    with engine.begin() as conn:
        W.topup(conn, 1, 1000, "CNY", "k", NOW)
        assert W.authorise(conn, order("o1", 1, 350), NOW).ok
        assert (W.balance(conn, 1, "CNY"), hold_of(conn, 1), revenue(conn)) == (650, 350, 0)
        again = W.authorise(conn, order("o1", 1, 350), NOW)
        assert again.ok and not again.created
        assert W.balance(conn, 1, "CNY") == 650
        assert W.capture(conn, order("o1", 1, 350), NOW).created
        assert not W.capture(conn, order("o1", 1, 350), NOW).created
        assert (W.balance(conn, 1, "CNY"), hold_of(conn, 1), revenue(conn)) == (650, 0, 350)
        kinds = conn.execute(sa.select(txns.c.kind).where(txns.c.order_id == "o1").order_by(txns.c.id)).scalars()
        assert list(kinds) == ["authorise", "capture"]


def test_void_gives_the_held_money_back_once(engine):
    with engine.begin() as conn:
        W.topup(conn, 1, 1000, "CNY", "k", NOW)
        W.authorise(conn, order("o1", 1, 400), NOW)
        assert W.void(conn, order("o1", 1, 400), NOW).created
        assert not W.void(conn, order("o1", 1, 400), NOW).created
        assert (W.balance(conn, 1, "CNY"), hold_of(conn, 1), revenue(conn)) == (1000, 0, 0)


def test_every_txn_sums_to_zero_and_history_shows_the_wallet_legs(engine):
    with engine.begin() as conn:
        W.topup(conn, 1, 1000, "CNY", "k", NOW)
        W.authorise(conn, order("o1", 1, 300), NOW)
        W.capture(conn, order("o1", 1, 300), NOW)
        W.authorise(conn, order("o2", 1, 200), NOW)
        W.void(conn, order("o2", 1, 200), NOW)
        assert unbalanced_txns(conn) == []
        assert count(conn, txns) == 5
        history = W.history(conn, 1, "CNY")
        assert [(h.kind, h.amount) for h in history] == [("void", 200), ("authorise", -200),
                                                          ("authorise", -300), ("topup", 1000)]


@pytest.mark.parametrize("amount", [0, -1, -500, MAX_TOPUP + 1, True, False, 12.5, "100"])
def test_bad_topup_amounts_raise_and_write_nothing(engine, amount):
    with engine.begin() as conn:
        with pytest.raises(PaymentError):
            W.topup(conn, 1, amount, "CNY", "k", NOW)
        assert count(conn, txns) == 0


def test_the_largest_topup_is_accepted(engine):
    with engine.begin() as conn:
        W.topup(conn, 1, MAX_TOPUP, "CNY", "k", NOW)
        assert W.balance(conn, 1, "CNY") == MAX_TOPUP


CUSTOMERS = st.integers(1, 3)
OPS = st.lists(st.one_of(
    st.tuples(st.just("topup"), CUSTOMERS, st.integers(1, 2000)),
    st.tuples(st.just("authorise"), CUSTOMERS, st.integers(1, 2000)),
    st.tuples(st.just("reauthorise"), st.integers(0, 30)),
    st.tuples(st.just("capture"), st.integers(0, 30)),
    st.tuples(st.just("void"), st.integers(0, 30)),
), max_size=25)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_random_money_movements_keep_the_books_balanced(ops):
    with tempfile.TemporaryDirectory() as tmp:
        eng = make_migrated_engine(f"sqlite:///{tmp}/p.db")
        try:
            _run_ops(eng, ops)
        finally:
            eng.dispose()


def _run_ops(eng, ops):
    wallet = {c: 0 for c in (1, 2, 3)}
    held = {c: 0 for c in (1, 2, 3)}
    orders_made = []  # [order, state] with state authorised / declined / captured / voided
    topped_up = captured = 0
    for step, op in enumerate(ops):
        with eng.begin() as conn:
            if op[0] == "topup":
                _, c, amount = op
                W.topup(conn, c, amount, "CNY", f"t{step}", NOW)
                wallet[c] += amount
                topped_up += amount
            elif op[0] == "authorise":
                _, c, amount = op
                o = order(f"o{step}", c, amount)
                outcome = W.authorise(conn, o, NOW)
                assert outcome.ok == (wallet[c] >= amount)
                if outcome.ok:
                    wallet[c] -= amount
                    held[c] += amount
                else:
                    assert "not enough" in outcome.reason
                orders_made.append([o, "authorised" if outcome.ok else "declined"])
            elif orders_made:
                entry = orders_made[op[1] % len(orders_made)]
                o, state = entry
                if op[0] == "reauthorise" and state != "declined":
                    assert not W.authorise(conn, o, NOW).created
                elif op[0] == "capture" and state in ("authorised", "captured"):
                    assert W.capture(conn, o, NOW).created == (state == "authorised")
                    if state == "authorised":
                        held[o.customer_id] -= o.amount
                        captured += o.amount
                        entry[1] = "captured"
                elif op[0] == "void" and state in ("authorised", "voided"):
                    assert W.void(conn, o, NOW).created == (state == "authorised")
                    if state == "authorised":
                        held[o.customer_id] -= o.amount
                        wallet[o.customer_id] += o.amount
                        entry[1] = "voided"
        with eng.connect() as conn:
            assert unbalanced_txns(conn) == []
            for c in wallet:
                got = W.balance(conn, c, "CNY")
                assert got >= 0
                assert got == wallet[c] and hold_of(conn, c) == held[c]
            assert revenue(conn) == captured
            total = sum(W.balance(conn, c, "CNY") + hold_of(conn, c) for c in wallet) + revenue(conn)
            assert total == topped_up
            assert balance(conn, account(conn, "topup_clearing", 0, "CNY")) == -topped_up


def test_payment_error_is_a_value_error():
    assert issubclass(payments.PaymentError, ValueError)


def test_bulk_settle_captures_and_voids_each_once_with_the_same_timestamps(engine):
    w = Wallet()
    with engine.begin() as conn:
        w.topup(conn, 1, 1000, "CNY", "t1", NOW)
        w.topup(conn, 2, 1000, "CNY", "t2", NOW)
        a, b = order("oa", 1, 300), order("ob", 2, 200)
        assert w.authorise(conn, a, NOW).ok and w.authorise(conn, b, NOW).ok
        w.settle(conn, [(a, "capture"), (b, "void")], NOW)
        assert (w.balance(conn, 1, "CNY"), w.balance(conn, 2, "CNY"), revenue(conn)) == (700, 1000, 300)
        assert unbalanced_txns(conn) == []
        # The bulk path writes timestamps exactly as the ordinary insert does, so they compare and sort.
        stamps = {k: t for k, t in conn.execute(sa.select(txns.c.key, txns.c.created_at))}
        assert stamps["capture:oa"] == stamps["void:ob"] == stamps["topup:t1"] == NOW
        raw = {k: t for k, t in conn.execute(sa.text("SELECT key, CAST(created_at AS TEXT) FROM txns"))}
        assert raw["capture:oa"] == raw["topup:t1"]
        with pytest.raises(sa.exc.IntegrityError):
            with conn.begin_nested():
                w.settle(conn, [(a, "capture")], NOW)  # a second capture of one order cannot be written
