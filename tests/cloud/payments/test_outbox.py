"""The shared foundation of the payment platforms: the outbox provider (cloud/payments/outbox.py), mandates,
statements, the registry's ordering by phone, and secrets read from 0600 files.

The outbox is driven here by a scripted platform (``Scripted.answers``): what a real platform answers is the
business of each platform's own tests, against its fake; these check what the outbox does with each answer."""

import os
from dataclasses import dataclass
from datetime import timedelta

import pytest
import sqlalchemy as sa

from cloud.accounts.journal import IdempotencyConflict, balance, find_account
from cloud.core.secrets import read_secret, read_secret_bytes
from cloud.payments import mandates, statement
from cloud.payments.outbox import Outbox, Sent, Unreachable, payment_ops
from cloud.payments.registry import REGISTRY, ProviderSpec, Registry
from cloud.payments.webhook import Event
from tests.cloud_fixtures import NOW


@dataclass
class Order:
    id: str
    customer_id: int = 7
    amount: int = 550
    currency: str = "CNY"


class Scripted(Outbox):
    """A platform whose answers the test writes down: a list per op, each an answer or an exception."""

    name = "sandbox"  # a registered name with a boundary account (the journal knows it)
    boundary = "sandbox"

    def __init__(self):
        super().__init__(live=True)
        self.answers: dict[str, list] = {}
        self.queries: dict[str, list] = {}
        self.sent: list[tuple[str, str]] = []
        self.asked: list[str] = []
        self.told: list[tuple[str, bool, str]] = []
        self.on_authorisation = lambda order_id, ok, reason: self.told.append((order_id, ok, reason))

    def _next(self, script: dict, op) :
        answer = script.get(op.op, []).pop(0) if script.get(op.op) else Sent("succeeded", platform_ref=f"p-{op.key}")
        if isinstance(answer, Exception):
            raise answer
        return answer

    def send(self, op):
        self.sent.append((op.op, op.key))
        return self._next(self.answers, op)

    def query(self, op):
        self.asked.append(op.key)
        return self._next(self.queries, op) if op.op in self.queries else None


def ops_of(engine, order_id):
    with engine.connect() as conn:
        return {r.op: r for r in conn.execute(sa.select(payment_ops).where(payment_ops.c.order_id == order_id))}


def deliver(engine, provider, at=NOW):
    return provider.deliver_due(engine, clock=lambda: at)


def test_an_authorisation_is_queued_once_per_key_and_a_changed_repeat_is_refused(engine):
    p, order = Scripted(), Order("o-1")
    with engine.begin() as conn:
        first = p.authorise(conn, order, "o-1", NOW)
        again = p.authorise(conn, order, "o-1", NOW)
        assert first.ok and first.pending and first.created
        assert again.pending and not again.created
        with pytest.raises(IdempotencyConflict):
            p.authorise(conn, Order("o-1", amount=999), "o-1", NOW)
    assert deliver(engine, p) == 1
    assert p.sent == [("authorise", "authorise:o-1")]  # sent once, however often it was asked
    assert ops_of(engine, "o-1")["authorise"].status == "succeeded"
    assert p.told == [("o-1", True, "")]  # the cloud hears of it, to send the vend


def test_a_lost_answer_is_retried_later_under_the_same_key_after_asking_the_platform(engine):
    p, order = Scripted(), Order("o-2")
    p.answers["authorise"] = [Unreachable("timed out")]
    p.queries["authorise"] = [Sent("succeeded", platform_ref="pi_2")]
    with engine.begin() as conn:
        p.authorise(conn, order, "o-2", NOW)
    deliver(engine, p)
    row = ops_of(engine, "o-2")["authorise"]
    assert row.status == "queued" and row.attempts == 1 and "timed out" in row.reason
    assert deliver(engine, p, NOW + timedelta(seconds=1)) == 0  # not before its backoff
    deliver(engine, p, NOW + timedelta(seconds=5))
    # The platform had it after all: asked, not sent a second time.
    assert p.sent == [("authorise", "authorise:o-2")] and p.asked == ["authorise:o-2"]
    row = ops_of(engine, "o-2")["authorise"]
    assert (row.status, row.platform_ref) == ("succeeded", "pi_2")


def test_a_capture_is_posted_to_the_journal_and_a_failed_one_is_not(engine):
    p = Scripted()
    for order_id in ("o-3", "o-4"):
        with engine.begin() as conn:
            p.authorise(conn, Order(order_id), order_id, NOW)
    deliver(engine, p)
    p.answers["capture"] = [Sent("succeeded", platform_ref="ch_3"), Sent("failed", "card expired")]
    with engine.begin() as conn:
        p.capture(conn, Order("o-3"), "o-3", NOW)
        p.capture(conn, Order("o-4"), "o-4", NOW)
    # What send gets for a capture names the authorisation it captures.
    assert '"authorisation": "p-authorise:o-3"' in ops_of(engine, "o-3")["capture"].detail
    deliver(engine, p)
    with engine.connect() as conn:
        revenue = find_account(conn, "revenue", 0, "CNY")
        assert balance(conn, revenue) == 550  # one capture, not two
        assert p.refunded(conn, Order("o-3")) == (550, 0)
        assert p.refunded(conn, Order("o-4")) == (0, 0)
    assert ops_of(engine, "o-4")["capture"].reason == "card expired"
    assert p.counts["sandbox_refused"] == 1


def test_a_void_before_the_authorisation_was_sent_asks_nothing_of_the_platform(engine):
    p, order = Scripted(), Order("o-5")
    with engine.begin() as conn:
        p.authorise(conn, order, "o-5", NOW)
        outcome = p.void(conn, order, "o-5", NOW)
    assert outcome.ok and not outcome.pending
    deliver(engine, p)
    assert p.sent == []
    rows = ops_of(engine, "o-5")
    assert rows["authorise"].status == "cancelled" and rows["void"].status == "succeeded"


def test_the_platforms_word_with_another_amount_is_ignored(engine):
    p, order = Scripted(), Order("o-6")
    p.answers["authorise"] = [Sent("pending", detail={"action_url": "https://bank.example/3ds/o-6"})]
    with engine.begin() as conn:
        p.authorise(conn, order, "o-6", NOW)
    deliver(engine, p)
    with engine.begin() as conn:
        assert p.action_url(conn, order) == "https://bank.example/3ds/o-6"  # the customer confirms there
        assert not p.confirm(conn, Event("e1", "authorisation.succeeded", "o-6", 1, "CNY", ""), NOW)
        assert not p.confirm(conn, Event("e2", "authorisation.succeeded", "o-6", 550, "USD", ""), NOW)
        assert p.authorisation(conn, "o-6").status == "pending"
        assert p.confirm(conn, Event("e3", "authorisation.succeeded", "o-6", 550, "CNY", ""), NOW)
        assert p.action_url(conn, order) is None
    assert p.counts["sandbox_amount_mismatch"] == 2


def test_a_refund_names_the_payment_it_returns_and_never_exceeds_the_capture(engine):
    p, order = Scripted(), Order("o-7")
    with engine.begin() as conn:
        p.authorise(conn, order, "o-7", NOW)
    deliver(engine, p)
    with engine.begin() as conn:
        p.capture(conn, order, "o-7", NOW)
    deliver(engine, p)
    with engine.begin() as conn:
        assert p.refund(conn, order, 200, "r1", NOW).amount == 200
        with pytest.raises(Exception, match="more than the 350 left"):
            p.refund(conn, order, 400, "r2", NOW)
    deliver(engine, p)
    refund = ops_of(engine, "o-7")["refund"]
    assert refund.status == "succeeded" and '"payment": "p-capture:o-7"' in refund.detail
    with engine.connect() as conn:
        assert balance(conn, find_account(conn, "revenue", 0, "CNY")) == 350


class NeedsCard(Scripted):
    needs_mandate = True

    def prepare(self, conn, op, order, now):
        return {"card": mandates.require(conn, order.customer_id, self.name).reference}


def test_a_customer_without_an_active_mandate_is_refused_before_anything_is_queued(engine):
    p, order = NeedsCard(), Order("o-8")
    with engine.begin() as conn:
        with pytest.raises(mandates.MandateMissing, match="not finished"):
            mandates.start(conn, 7, "sandbox", NOW)
            p.authorise(conn, order, "o-8", NOW)
    with engine.begin() as conn:
        mandates.start(conn, 7, "sandbox", NOW)
        assert not mandates.activate(conn, 8, "sandbox", "pm_x", NOW)  # never sent there: changes nothing
        assert mandates.activate(conn, 7, "sandbox", "pm_7", NOW)
        p.authorise(conn, order, "o-8", NOW)
        assert "\"card\": \"pm_7\"" in p.authorisation(conn, "o-8").detail
        assert mandates.revoke(conn, "sandbox", "pm_7", NOW) == 7
        with pytest.raises(mandates.MandateMissing, match="withdrew"):
            p.authorise(conn, Order("o-9"), "o-9", NOW)
    assert set(ops_of(engine, "o-9")) == set()


def test_a_notification_about_a_mandate_or_a_refund_goes_to_the_provider(engine):
    p = Scripted()
    with engine.begin() as conn:
        mandates.start(conn, 7, "sandbox", NOW)
        assert p.notified(conn, Event("m1", "mandate.activated", "", 0, "", "", {"customer_id": 7,
                                                                                "reference": "agr_1"}), NOW) \
            == "mandate activated"
        assert mandates.active(conn, 7, "sandbox").reference == "agr_1"
        assert "revoked" in p.notified(conn, Event("m2", "mandate.revoked", "", 0, "", "", {"reference": "agr_1"}), NOW)
        assert mandates.active(conn, 7, "sandbox") is None


def line(pid, kind, order_id, amount, fee=0, at=NOW):
    return statement.StatementLine(pid, kind, order_id, amount, "CNY", at, fee)


def test_a_statement_is_imported_once_its_fees_posted_and_held_against_the_journal(engine):
    p = Scripted()
    for order_id in ("o-10", "o-11"):
        with engine.begin() as conn:
            p.authorise(conn, Order(order_id), order_id, NOW)
        deliver(engine, p)
        with engine.begin() as conn:
            p.capture(conn, Order(order_id), order_id, NOW)
        deliver(engine, p)
    lines = [line("txn_10", "capture", "o-10", 550, fee=17), line("txn_12", "capture", "o-12", 300, fee=9),
             line("txn_11", "capture", "o-11", 500, fee=16)]
    with engine.begin() as conn:
        first = statement.import_statement(conn, "sandbox", "sandbox", lines, b"file", NOW)
        again = statement.import_statement(conn, "sandbox", "sandbox", lines, b"file", NOW)
        assert (first["new"], again["new"], first["fees"]) == (3, 0, {"CNY": 42})
        assert balance(conn, find_account(conn, statement.FEES, 0, "CNY")) == -42  # posted once
        found = {(m["kind"], m["order_id"]) for m in statement.compare(conn, "sandbox", NOW - timedelta(days=1),
                                                                       NOW + timedelta(days=1))}
    assert found == {("statement_not_in_journal", "o-12"), ("statement_amount_differs", "o-11")}


def test_a_statement_with_a_bad_line_imports_nothing(engine):
    with engine.begin() as conn:
        with pytest.raises(statement.StatementRefused, match="txn_2: the amount"):
            statement.import_statement(conn, "sandbox", "sandbox", [line("txn_1", "capture", "o-1", 100),
                                                                   line("txn_2", "capture", "o-2", -5)], b"f", NOW)
        assert conn.execute(sa.select(sa.func.count()).select_from(statement.statement_lines)).scalar() == 0


def test_the_phone_decides_which_way_to_pay_is_offered_first():
    registry = Registry()
    for name, agent in (("card", ""), ("alipay", "AlipayClient"), ("wechat", "MicroMessenger")):
        registry._specs[name] = ProviderSpec(name=name, boundary=name, build=lambda s, c: None, user_agent=agent)
    inside_wechat = "Mozilla/5.0 (iPhone) AppleWebKit MicroMessenger/8.0.49 NetType/WIFI"
    assert registry.in_order_for(("card", "alipay", "wechat"), inside_wechat) == ("wechat", "card", "alipay")
    assert registry.in_order_for(("card", "alipay", "wechat"), "Mozilla/5.0 AlipayClient/10.5") == \
        ("alipay", "card", "wechat")
    assert registry.in_order_for(("card", "alipay", "wechat"), "Mozilla/5.0 Safari") == ("card", "alipay", "wechat")
    assert REGISTRY.in_order_for(("wallet",), "") == ("wallet",)


def test_a_key_file_others_may_read_stops_the_cloud_naming_the_file(tmp_path):
    path = tmp_path / "stripe.key"
    path.write_text("sk_test_secret\n")
    os.chmod(path, 0o644)
    with pytest.raises(SystemExit, match=r"--stripe-key-file .*stripe.key: others may read it \(mode 0644\)") as e:
        read_secret("--stripe-key-file", str(path))
    assert "sk_test" not in str(e.value)
    os.chmod(path, 0o600)
    assert read_secret("--stripe-key-file", str(path)) == "sk_test_secret"
    with pytest.raises(SystemExit, match="cannot read it"):
        read_secret_bytes("--alipay-key-file", str(tmp_path / "missing.pem"))
    (tmp_path / "empty.pem").write_bytes(b"\n")
    os.chmod(tmp_path / "empty.pem", 0o600)
    with pytest.raises(SystemExit, match="empty"):
        read_secret_bytes("--alipay-key-file", str(tmp_path / "empty.pem"))
