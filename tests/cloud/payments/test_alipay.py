"""Paying by Alipay (cloud/payments/alipay/) through the cloud's own pages, API and ingest, with the real
python-alipay-sdk against the local fake of Alipay's gateway (tests/fakes/alipay.py): registration signs the
withholding agreement on the fake's page; a purchase checks the agreement and takes nothing until the drop;
the drop pays once (also after a timeout), a jam takes nothing; notifications are verified, counted once,
forgeries refused; refunds go to Alipay; the bill is imported and matched; a revoked agreement asks the
customer to choose again."""

import logging
import os
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.app
import cloud.core.db
import cloud.core.settings
import cloud.service
from cloud.core.db import utcnow
from cloud.payments import REGISTRY, mandates, txns, webhook_events
from cloud.payments.alipay.bill import read_bill
from cloud.payments.outbox import payment_ops
from cloud.payments.statement import StatementRefused, compare, import_statement
from cloud.people import auth, staff
from cloud.sales import orders
from cloud.sync.ingest import store_batch
from protocol import token as qrtoken
from tests.cloud.payments.alipay_fixtures import APP_ID, PID, alipay_keys, fake, open_page  # noqa: F401
from tests.cloud_fixtures import MACHINE, SECRET, Chain, add_machine, db_url, post_form, slot_spec, unbalanced_txns  # noqa: F401
from tests.fakes.alipay import CHINA, AlipayFake, Keys

HOOK = "/api/v1/payments/webhook/alipay"


def key_files(tmp_path, keys: Keys) -> dict:
    paths = keys.write(tmp_path / "keys")
    return {"alipay_private_key_file": str(paths["app_private"]), "alipay_public_key_file": str(paths["alipay_public"])}


def alipay_settings(tmp_path, db_url, fake, **more):
    return cloud.core.settings.Settings(
        var=str(tmp_path), db=db_url, broker="127.0.0.1:1", public_url="http://127.0.0.1:9", alipay_app_id=APP_ID,
        alipay_gateway=fake.gateway, alipay_pid=PID, alipay_timeout_s=3.0, **key_files(tmp_path, fake.keys),
        **more).resolve()


@pytest.fixture
def cloud_obj(tmp_path, db_url, fake):
    """A cloud configured for Alipay (never started: no broker); the fake's notifications go to a port where
    nothing listens, and a test hands them to the webhook route itself (the very bytes Alipay signed)."""
    fake.notify_tries = 1
    obj = cloud.service.Cloud(alipay_settings(tmp_path, db_url, fake))
    obj.sent = []
    obj.send_vend = lambda order: obj.sent.append(order.id)
    cloud.core.db.migrate(obj.engine)
    with obj.engine.begin() as conn:
        add_machine(conn, specs=[slot_spec("A1", 350), slot_spec("A2", 200, "water", "Water")])
    yield obj
    obj.provider.stop()
    obj.engine.dispose()


@pytest.fixture
def client(cloud_obj):
    with TestClient(cloud.app.create_app(cloud_obj, "admintoken", b"k" * 32), follow_redirects=False) as c:
        yield c


def deliver(cloud_obj, at=None):
    while cloud_obj.provider.alipay.deliver_due(cloud_obj.engine, clock=lambda: at or utcnow()):
        pass


def notices(fake, kind):
    return [n for n in fake.notices if n.params.get("notify_type") == kind]


def hook(client, body: bytes):
    return client.post(HOOK, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})


def to_alipay(client, registered) -> str:
    """Registration's answer goes to our own page on the way to Alipay's (a form may not redirect to another
    site); that page sends the phone on with a Refresh header and a link. Alipay's URL."""
    assert registered.status_code == 303 and registered.headers["location"].startswith(
        "http://127.0.0.1:9/pay/alipay/agreement/sign?")
    page = client.get(registered.headers["location"].removeprefix("http://127.0.0.1:9"))
    assert page.status_code == 200 and "Continue to Alipay" in page.text
    url = page.headers["refresh"].removeprefix("0; url=")
    assert url.startswith(cloud_gateway(client)) and f'href="{url.replace("&", "&amp;")}"' in page.text
    return url


def cloud_gateway(client) -> str:
    return client.app.state.cloud.settings.alipay_gateway + "?"


def register(client, fake, agree=True, ua="Mozilla/5.0"):
    """A new customer scans, registers choosing Alipay, signs (or declines) on Alipay's page and comes back."""
    client.get(f"/q/{qrtoken.make(MACHINE, SECRET.encode(), time.time(), 5)}")
    r = post_form(client, "/register", dict(name="Li", phone="+8613800000088", payment_method="alipay", next="/m/m-1"),
                  headers={"User-Agent": ua})
    target = fake.sign_agreement(open_page(to_alipay(client, r)), agree=agree)
    parts = urllib.parse.urlsplit(target)
    assert parts.path == "/pay/alipay/agreement/return"
    return client.get(f"{parts.path}?{parts.query}")


def mandate(cloud_obj, customer_id=1):
    with cloud_obj.engine.connect() as conn:
        return mandates.get(conn, customer_id, "alipay")


def buy(client, slot="A1", key="buy-key-0001"):
    r = post_form(client, "/m/m-1/buy", {"slot": slot, "key": key})
    assert r.status_code == 303
    return r.headers["location"]


def order_row(cloud_obj, order_id):
    with cloud_obj.engine.connect() as conn:
        return orders.get(conn, order_id)


def ops(cloud_obj, order_id=None):
    with cloud_obj.engine.connect() as conn:
        q = sa.select(payment_ops).order_by(payment_ops.c.id)
        if order_id:
            q = q.where(payment_ops.c.order_id == order_id)
        return [(r.op, r.status) for r in conn.execute(q)]


def vend(cloud_obj, order_id, outcome="vend.succeeded"):
    """The machine's ledger says what happened, and the cloud ingests it as it would from MQTT."""
    chain = Chain()
    chain.add("vend.started", order_id=order_id, cmd_id=f"v-{order_id}", slot="A1")
    chain.add(outcome, order_id=order_id, slot="A1", **({"turns": 1} if outcome == "vend.succeeded" else
                                                        {"reason": "jam"}))
    with cloud_obj.engine.begin() as conn:
        store_batch(conn, cloud_obj.provider, MACHINE, chain.batch(1), utcnow())


def bought(client, cloud_obj, fake, slot="A1"):
    """Registered, bought, the agreement checked: the order authorised and the vend sent."""
    assert register(client, fake).status_code == 303
    order_id = buy(client, slot).rsplit("/", 1)[1]
    deliver(cloud_obj)
    assert order_row(cloud_obj, order_id).status == "authorised" and cloud_obj.sent == [order_id]
    return order_id


def journal(cloud_obj, order_id):
    with cloud_obj.engine.connect() as conn:
        return sorted((r.kind, r.key) for r in conn.execute(sa.select(txns).where(txns.c.order_id == order_id)))


# -- registration --------------------------------------------------------------------------------------

def test_registration_offers_alipay_first_inside_alipay_and_signs_the_agreement(client, cloud_obj, fake):
    page = client.get("/register", headers={"User-Agent": "Mozilla/5.0 AlipayClient/10.5"}).text
    assert "Alipay" in page and page.index('value="alipay"') < page.index('value="wallet"')
    plain = client.get("/register", headers={"User-Agent": "Mozilla/5.0"}).text
    assert plain.index('value="wallet"') < plain.index('value="alipay"')
    r = register(client, fake)
    assert r.status_code == 303 and r.headers["location"] == "/m/m-1"
    found = mandate(cloud_obj)
    assert found.status == "active" and found.reference in fake.agreements
    assert fake.agreements[found.reference]["external_agreement_no"] == found.detail["external_agreement_no"]
    # The agreement's own notification, after the return: recorded once, changes nothing.
    (notice,) = notices(fake, "dut_user_sign")
    assert hook(client, notice.body).text == "success"
    assert mandate(cloud_obj) == found


def test_a_declined_agreement_leaves_no_mandate_and_says_so(client, cloud_obj, fake):
    r = register(client, fake, agree=False)
    assert r.status_code == 200 and "was not signed" in r.text
    assert mandate(cloud_obj).status == "pending" and fake.agreements == {}


def test_the_notification_alone_activates_the_agreement_and_a_forged_return_does_not(client, cloud_obj, fake):
    client.get(f"/q/{qrtoken.make(MACHINE, SECRET.encode(), time.time(), 5)}")
    r = post_form(client, "/register", dict(name="Li", phone="+8613800000088", payment_method="alipay", next="/m/m-1"))
    target = fake.sign_agreement(open_page(to_alipay(client, r)), agree=True)
    parts = urllib.parse.urlsplit(target)
    forged = parts.query.replace("status=NORMAL", "status=NORMAL&extra=1")
    assert client.get(f"{parts.path}?{forged}").status_code == 400
    assert mandate(cloud_obj).status == "pending"
    (notice,) = notices(fake, "dut_user_sign")
    assert hook(client, notice.body).text == "success"
    assert mandate(cloud_obj).status == "active"


# -- buying ----------------------------------------------------------------------------------------------

def test_a_purchase_checks_the_agreement_takes_nothing_before_the_drop_and_pays_once_on_it(client, cloud_obj, fake):
    order_id = bought(client, cloud_obj, fake)
    assert fake.trades == {}  # nothing taken, nothing held
    assert [m for m, _ in fake.requests] == ["alipay.user.agreement.query"]
    vend(cloud_obj, order_id)
    deliver(cloud_obj)
    ((trade_no, trade),) = fake.trades.items()
    assert trade["amount"] == 350 and trade_no.startswith(order_id + "_")
    assert ops(cloud_obj, order_id) == [("authorise", "succeeded"), ("capture", "succeeded")]
    assert order_row(cloud_obj, order_id).status == "succeeded"
    assert journal(cloud_obj, order_id) == [("capture", f"alipay:capture:{order_id}")]
    # Alipay's trade notification, and its redelivery: "success" both times, nothing moves again.
    (notice,) = notices(fake, "trade_status_sync")
    for _ in range(2):
        assert hook(client, notice.body).text == "success"
    assert journal(cloud_obj, order_id) == [("capture", f"alipay:capture:{order_id}")]
    assert cloud_obj.stats.counts["webhook_duplicates"] == 1
    with cloud_obj.engine.connect() as conn:
        assert unbalanced_txns(conn) == []


def test_a_jam_voids_and_alipay_is_never_asked_for_money(client, cloud_obj, fake):
    order_id = bought(client, cloud_obj, fake)
    vend(cloud_obj, order_id, "vend.failed")
    deliver(cloud_obj)
    assert ops(cloud_obj, order_id) == [("authorise", "succeeded"), ("void", "succeeded")]
    assert fake.trades == {} and "alipay.trade.pay" not in [m for m, _ in fake.requests]
    assert journal(cloud_obj, order_id) == []


@pytest.mark.parametrize("fault", ["slow", "lost", "down"])
def test_a_capture_whose_answer_never_came_is_queried_then_paid_exactly_once(client, cloud_obj, fake, fault):
    order_id = bought(client, cloud_obj, fake)
    vend(cloud_obj, order_id)
    fake.fault(fault, "alipay.trade.pay", seconds=4.0)
    deliver(cloud_obj)
    (row,) = [r for r in ops(cloud_obj, order_id) if r[0] == "capture"]
    assert row == ("capture", "queued")
    assert len(fake.trades) == (0 if fault == "down" else 1)  # slow and lost: done at Alipay, answer lost
    deliver(cloud_obj, utcnow() + timedelta(seconds=5))
    methods = [m for m, _ in fake.requests if m != "alipay.user.agreement.query"]
    # Asked before paying again; a refused request (503) never reached Alipay's books, so the query finds nothing
    # and the trade is paid under the same number; a slow or lost one is found by the query.
    assert methods == (["alipay.trade.query", "alipay.trade.pay"] if fault == "down"
                       else ["alipay.trade.pay", "alipay.trade.query"])
    assert len(fake.trades) == 1 and ops(cloud_obj, order_id)[-1] == ("capture", "succeeded")
    assert journal(cloud_obj, order_id) == [("capture", f"alipay:capture:{order_id}")]
    assert cloud_obj.provider.alipay.counts["alipay_unreachable"] == 1


def test_a_revoked_agreement_asks_the_customer_to_choose_again_and_charges_nothing(client, cloud_obj, fake):
    assert register(client, fake).status_code == 303
    notice = fake.unsign(mandate(cloud_obj).reference)
    assert hook(client, notice.body).text == "success"
    assert mandate(cloud_obj).status == "revoked"
    r = post_form(client, "/m/m-1/buy", {"slot": "A1", "key": "buy-key-0002"})
    assert r.status_code == 303 and r.headers["location"].startswith("/account/payment?why=again")
    assert ops(cloud_obj) == [] and fake.trades == {}


def test_an_agreement_ended_without_our_hearing_declines_at_the_check_and_revokes_it(client, cloud_obj, fake):
    assert register(client, fake).status_code == 303
    fake.unsign(mandate(cloud_obj).reference)  # its notification never reaches us
    order_id = buy(client).rsplit("/", 1)[1]
    deliver(cloud_obj)
    row = order_row(cloud_obj, order_id)
    assert row.status == "declined" and "UNSIGN" in row.reason and cloud_obj.sent == []
    assert mandate(cloud_obj).status == "revoked" and fake.trades == {}
    r = post_form(client, "/m/m-1/buy", {"slot": "A1", "key": "buy-key-0003"})
    assert r.headers["location"].startswith("/account/payment?why=again")


# -- notifications ---------------------------------------------------------------------------------------

def counted(cloud_obj):
    with cloud_obj.engine.connect() as conn:
        counts = (conn.execute(sa.select(sa.func.count()).select_from(webhook_events)).scalar(),
                  conn.execute(sa.select(sa.func.count()).select_from(txns)).scalar())
    return counts + (ops(cloud_obj),)


def test_forged_tampered_and_malformed_notifications_are_refused_logged_and_change_nothing(client, cloud_obj, fake,
                                                                                         caplog):
    order_id = bought(client, cloud_obj, fake)
    vend(cloud_obj, order_id)
    fake.fault("lost", "alipay.trade.pay")  # the trade is made, its answer lost: the capture waits
    deliver(cloud_obj)
    (notice,) = notices(fake, "trade_status_sync")
    before = counted(cloud_obj)
    other = AlipayFake(Keys.generate(), app_id=APP_ID)
    tampered = urllib.parse.urlencode({**notice.params, "total_amount": "0.01"}).encode()
    forged = urllib.parse.urlencode(other.signed({k: v for k, v in notice.params.items()
                                                  if k not in ("sign", "sign_type")})).encode()
    unsigned = urllib.parse.urlencode({k: v for k, v in notice.params.items() if k != "sign"}).encode()
    with caplog.at_level(logging.WARNING):
        for body in (tampered, forged, unsigned):
            r = hook(client, body)
            assert (r.status_code, r.text) == (401, "fail")
        for body in (b"%zz&&==", "total_amount=1".encode("utf-16")):
            r = hook(client, body)
            assert (r.status_code, r.text) == (400, "fail")
    assert "alipay webhook from testclient refused (signature)" in caplog.text
    counts = cloud_obj.stats.counts
    assert (counts["webhook_refused_signature"], counts["webhook_refused_malformed"]) == (3, 2)
    assert counted(cloud_obj) == before
    # The genuine one settles the waiting capture; the same again changes nothing.
    assert hook(client, notice.body).text == "success"
    assert ops(cloud_obj, order_id)[-1] == ("capture", "succeeded")
    assert hook(client, notice.body).text == "success"
    assert journal(cloud_obj, order_id) == [("capture", f"alipay:capture:{order_id}")]


def test_a_signed_notification_for_a_trade_not_ours_moves_nothing_and_is_logged(client, cloud_obj, fake, caplog):
    before = counted(cloud_obj)[1:]
    body = urllib.parse.urlencode(fake.signed({
        "notify_id": "n" * 32, "notify_type": "trade_status_sync", "app_id": APP_ID, "trade_status": "TRADE_SUCCESS",
        "out_trade_no": "onobody_0123456789abcdef", "trade_no": "2026", "total_amount": "3.50", "seller_id": PID})).encode()
    with caplog.at_level(logging.WARNING):
        assert hook(client, body).text == "success"
    assert "names no trade of ours" in caplog.text and counted(cloud_obj)[1:] == before
    other_merchant = urllib.parse.urlencode(fake.signed({
        "notify_id": "m" * 32, "notify_type": "trade_status_sync", "app_id": APP_ID, "trade_status": "TRADE_SUCCESS",
        "out_trade_no": "onobody_0123456789abcdef", "trade_no": "2026", "total_amount": "3.50",
        "seller_id": "2088999999999999"})).encode()
    assert hook(client, other_merchant).status_code == 401


# -- refunds and the bill --------------------------------------------------------------------------------

@pytest.fixture
def manager(cloud_obj):
    with cloud_obj.engine.begin() as conn:
        user_id = staff.add_staff(conn, "mona", "manager", utcnow(), None, False, None)
        return {"Authorization": f"Bearer {auth.new_token(conn, user_id, 'test', utcnow())[1]}"}


def captured_order(client, cloud_obj, fake):
    order_id = bought(client, cloud_obj, fake)
    vend(cloud_obj, order_id)
    deliver(cloud_obj)
    return order_id


def test_a_managers_refund_goes_to_alipay_once(client, cloud_obj, fake, manager):
    order_id = captured_order(client, cloud_obj, fake)
    cloud_obj.provider.alipay.start(cloud_obj.engine)  # the worker, so the route has Alipay's answer
    body = {"reason": "the can was dented", "key": "refund-0001", "amount": 150}
    r = client.post(f"/api/v1/orders/{order_id}/refund", json=body, headers=manager)
    assert r.status_code == 200 and r.json()["status"] == "succeeded" and r.json()["refunded"] == 150
    again = client.post(f"/api/v1/orders/{order_id}/refund", json=body, headers=manager)
    assert again.json()["created"] is False
    (trade,) = fake.trades.values()
    assert trade["refunded"] == 150 and len(fake.refunds) == 1
    too_much = client.post(f"/api/v1/orders/{order_id}/refund", json={**body, "key": "refund-0002", "amount": 201},
                           headers=manager)
    assert too_much.status_code == 409 and trade["refunded"] == 150
    assert journal(cloud_obj, order_id) == [("capture", f"alipay:capture:{order_id}"),
                                            ("refund", "alipay:refund:refund-0001")]


def test_the_bill_is_imported_with_its_fees_and_matches_the_journal(client, cloud_obj, fake):
    order_id = captured_order(client, cloud_obj, fake)
    order = order_row(cloud_obj, order_id)
    with cloud_obj.engine.begin() as conn:
        cloud_obj.provider.refund(conn, order, 100, "refund-0001", utcnow())
    deliver(cloud_obj)
    # The bill as Alipay hands it out: a download URL, then a zip of GBK CSV files.
    client_ = cloud_obj.provider.alipay.client
    day = datetime.now(CHINA).date()
    url = client_.bill_url(day.isoformat()).body["bill_download_url"]
    data = urllib.request.urlopen(url).read()
    lines = REGISTRY["alipay"].statement(cloud_obj.settings, data)
    assert sorted((line.kind, line.order_id, line.amount, line.fee) for line in lines) == [
        ("capture", order_id, 350, 2), ("refund", order_id, 100, 0)]
    with cloud_obj.engine.begin() as conn:
        result = import_statement(conn, "alipay", "alipay", lines, data, utcnow())
        assert result["new"] == 2 and result["fees"] == {"CNY": 2}
        assert import_statement(conn, "alipay", "alipay", lines, data, utcnow())["new"] == 0
        lo = min(line.at for line in lines) - timedelta(days=1)
        assert compare(conn, "alipay", lo, lo + timedelta(days=3)) == []
        assert unbalanced_txns(conn) == []


def bill_bytes(fake, order_id="o1"):
    fake.trades["t"] = {"trade_no": "2026120522001", "out_trade_no": f"{order_id}_0123456789abcdef", "amount": 1234,
                        "subject": "可乐", "created": time.time(), "paid": time.time(), "refunded": 0, "fee": 7,
                        "total_amount": "12.34", "buyer_user_id": "2088", "trade_status": "TRADE_SUCCESS"}
    return fake.bill_csv(datetime.now(CHINA).date())


def test_a_bill_in_yuan_becomes_exact_fen(fake):
    (line,) = read_bill(bill_bytes(fake), PID)
    assert (line.kind, line.order_id, line.amount, line.fee, line.currency) == ("capture", "o1", 1234, 7, "CNY")
    assert line.at.utcoffset() == timedelta(0)


@pytest.mark.parametrize("damage,why", [
    (lambda b: b[: b.index("#-----".encode()) + 10 + (len(b) - b.index("#-----".encode())) // 2], "truncated"),
    (lambda b: b"\r\n".join(b.split(b"\r\n")[:-5]), "truncated"),
    (lambda b: b.replace("#交易合计：1笔".encode("gbk"), "#交易合计：2笔".encode("gbk")), "truncated"),
    (lambda b: "日期,金额\r\n2026-12-05,1.00\r\n".encode("gbk"), "not an Alipay bill"),
    (lambda b: b.decode("gbk").encode("utf-16"), "not"),
    (lambda b: b.replace("订单金额（元）".encode("gbk"), b"amount"), "lacks the columns"),
    (lambda b: b.replace(b"12.34", b"12.3x"), "not an amount in yuan"),
    (lambda b: b"PK\x03\x04broken", "broken zip"),
])
def test_a_damaged_or_foreign_bill_is_refused_naming_why(fake, damage, why):
    with pytest.raises(StatementRefused, match=why):
        read_bill(damage(bill_bytes(fake)), PID)


def test_another_merchants_bill_is_refused(alipay_keys):
    other = AlipayFake(alipay_keys, pid="2088999999999999")
    with pytest.raises(StatementRefused, match="another merchant's"):
        read_bill(bill_bytes(other), PID)


# -- settings --------------------------------------------------------------------------------------------

def test_a_key_file_others_may_read_or_a_missing_one_stops_the_cloud_naming_it(tmp_path, db_url, fake):
    settings = alipay_settings(tmp_path, db_url, fake)
    os.chmod(settings.alipay_private_key_file, 0o644)
    with pytest.raises(SystemExit, match=r"--alipay-private-key-file .*app_private.pem: others may read it"):
        cloud.service.Cloud(settings)
    settings.alipay_public_key_file = str(tmp_path / "nope.pem")
    os.chmod(settings.alipay_private_key_file, 0o600)
    with pytest.raises(SystemExit, match=r"--alipay-public-key-file .*nope.pem: cannot read it"):
        cloud.service.Cloud(settings)
    (tmp_path / "junk.pem").write_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    os.chmod(tmp_path / "junk.pem", 0o600)
    settings.alipay_public_key_file = str(tmp_path / "junk.pem")
    with pytest.raises(SystemExit, match="junk.pem.*not an RSA key") as info:
        cloud.service.Cloud(settings)
    assert "AAAA" not in str(info.value)


@pytest.mark.parametrize("argv,message", [
    (["--alipay-app-id", "2021x"], "--alipay-app-id '2021x': the app id Alipay gave, digits only"),
    (["--alipay-app-id", "2021"], "--alipay-private-key-file is needed"),
    (["--alipay-app-id", "2021", "--alipay-private-key-file", "a", "--alipay-public-key-file", "b",
      "--alipay-gateway", "openapi.alipay.com"], "--alipay-gateway"),
    (["--alipay-app-id", "2021", "--alipay-private-key-file", "a", "--alipay-public-key-file", "b",
      "--alipay-pid", "1234"], "--alipay-pid '1234'"),
    (["--alipay-timeout", "0"], "--alipay-timeout 0.0: must be from 0.5 to 60"),
])
def test_wrong_alipay_settings_are_refused_naming_the_option(argv, message):
    with pytest.raises(SystemExit) as info:
        cloud.core.settings.parse(argv)
    assert message in str(info.value)


# -- a drop after the order was closed ---------------------------------------------------------------------

def test_a_product_dropped_after_the_order_closed_is_charged_afresh_once_under_the_agreement(client, cloud_obj,
                                                                                           fake):
    order_id = bought(client, cloud_obj, fake)
    vend(cloud_obj, order_id, "vend.failed")
    deliver(cloud_obj)
    order = order_row(cloud_obj, order_id)
    for _ in range(2):  # the same late drop reported twice: one charge
        with cloud_obj.engine.begin() as conn:
            outcome = cloud_obj.provider.charge(conn, order, f"{order_id}:dropped", utcnow())
        assert outcome.ok
        deliver(cloud_obj)
    (trade_no,) = fake.trades
    assert trade_no.startswith(order_id + "_") and fake.trades[trade_no]["amount"] == 350
    assert ops(cloud_obj, order_id)[-1] == ("charge", "succeeded")
    assert journal(cloud_obj, order_id) == [("capture", f"alipay:charge:{order_id}:dropped")]


def test_a_capture_declined_because_the_agreement_ended_revokes_the_mandate(client, cloud_obj, fake):
    order_id = bought(client, cloud_obj, fake)
    fake.unsign(mandate(cloud_obj).reference)  # ended between "Buy" and the drop; its notice never reaches us
    vend(cloud_obj, order_id)
    deliver(cloud_obj)
    assert ops(cloud_obj, order_id)[-1] == ("capture", "declined") and fake.trades == {}
    assert mandate(cloud_obj).status == "revoked"
