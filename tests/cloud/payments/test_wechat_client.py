"""The WeChat Pay client (the wechatpayv3 library, pointed at the local fake) and the trade bill reader."""

import time
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.payments.wechat import bill
from cloud.payments.wechat.client import Credentials, NotificationRefused, Refused, Unreachable
from tests.cloud.payments.wechat_fixtures import KEYS, client_of, merchant_pem
from tests.fakes.wechat import FakeWeChatPay, Keys, yuan


@pytest.fixture(scope="module")
def keys():
    return KEYS


@pytest.fixture
def fake(keys):
    f = FakeWeChatPay(keys, stall_s=1.0)
    f.start()
    yield f
    f.stop()


def test_a_jsapi_order_is_placed_queried_paid_and_refunded(fake):
    client, openid = client_of(fake), fake.new_user()
    prepay = client.jsapi("o0123456789abcdef", "Cola", 350, openid)
    assert client.jsapi("o0123456789abcdef", "Cola", 350, openid) == prepay  # the same order again: same prepay_id
    assert client.query("o0123456789abcdef")["trade_state"] == "NOTPAY"
    assert client.query("onothere1234") is None
    fake.pay("o0123456789abcdef", notify=False)
    trade = client.query("o0123456789abcdef")
    assert trade["trade_state"] == "SUCCESS" and trade["amount"]["total"] == 350
    refund = client.refund("void-o0123456789abcdef", "o0123456789abcdef", 350, 350)
    assert refund["status"] == "SUCCESS" and refund["amount"]["refund"] == 350
    assert client.refund("void-o0123456789abcdef", "o0123456789abcdef", 350, 350)["refund_id"] == refund["refund_id"]
    assert client.query_refund("void-o0123456789abcdef")["status"] == "SUCCESS"
    with pytest.raises(Refused) as e:
        client.refund("refund-2", "o0123456789abcdef", 1, 350)
    assert e.value.code == "NOT_ENOUGH"


def test_the_same_out_trade_no_with_another_amount_is_refused(fake):
    client, openid = client_of(fake), fake.new_user()
    client.jsapi("o1111111111", "Cola", 350, openid)
    with pytest.raises(Refused) as e:
        client.jsapi("o1111111111", "Cola", 351, openid)
    assert e.value.code == "INVALID_REQUEST"


def test_an_unpaid_order_closes_and_cannot_be_paid_after(fake):
    client = client_of(fake)
    client.jsapi("o2222222222", "Cola", 350, fake.new_user())
    client.close("o2222222222")
    assert client.query("o2222222222")["trade_state"] == "CLOSED"


def test_the_public_key_mode_fetches_no_certificate(keys):
    fake = FakeWeChatPay(keys, public_key_mode=True)
    fake.start()
    try:
        client = client_of(fake, public_key=True)
        client.jsapi("o3333333333", "Cola", 350, fake.new_user())
        assert client.query("o3333333333")["trade_state"] == "NOTPAY"  # the answer's signature checked
        assert ("GET", "/v3/certificates") not in fake.requests
    finally:
        fake.stop()


def test_a_platform_that_stalls_or_fails_is_unreachable_and_a_lost_answer_is_found_by_query(fake):
    client, openid = client_of(fake), fake.new_user()
    client.query("o4444444444")  # the certificates fetched
    fake.fail("/v3/pay/transactions/jsapi", "500")
    with pytest.raises(Unreachable):
        client.jsapi("o4444444444", "Cola", 350, openid)
    fake.fail("/v3/pay/transactions/jsapi", "timeout")
    with pytest.raises(Unreachable):
        client.jsapi("o4444444444", "Cola", 350, openid)
    assert client.query("o4444444444") is None  # the stalled request did nothing
    fake.fail("/v3/pay/transactions/jsapi", "lost")
    with pytest.raises(Unreachable):
        client.jsapi("o4444444444", "Cola", 350, openid)
    assert client.query("o4444444444")["trade_state"] == "NOTPAY"  # the lost one did


def test_a_wrong_merchant_key_is_refused_by_the_platform(fake, keys):
    other = Keys(mchid=keys.mchid, merchant_serial=keys.merchant_serial, apiv3_key=keys.apiv3_key)
    client = client_of(fake)
    client.creds = Credentials(**{**client.creds.__dict__, "private_key": merchant_pem(other)})
    with pytest.raises(Unreachable):  # even the certificates are refused: no platform certificate
        client.query("o5555555555")


def test_a_notification_is_verified_and_decrypted_and_a_forged_or_stale_one_refused(fake):
    client, openid = client_of(fake), fake.new_user()
    client.jsapi("o6666666666", "Cola", 350, openid)
    fake.pay("o6666666666", notify=False)
    headers, body = fake.notification("o6666666666")
    data = client.notification(headers, body, time.time())
    assert data["event_type"] == "TRANSACTION.SUCCESS"
    assert data["resource"]["out_trade_no"] == "o6666666666" and data["resource"]["amount"]["total"] == 350
    forged_headers, forged_body = fake.notification("o6666666666", sign_with=Keys().platform_key)
    with pytest.raises(NotificationRefused) as e:
        client.notification(forged_headers, forged_body, time.time())
    assert e.value.why == "signature"
    tampered = body.replace(b'"ciphertext": "', b'"ciphertext": "AA')
    with pytest.raises(NotificationRefused):
        client.notification(headers, tampered, time.time())
    old_headers, old_body = fake.notification("o6666666666", timestamp=int(time.time()) - 3600)
    with pytest.raises(NotificationRefused) as e:
        client.notification(old_headers, old_body, time.time())
    assert e.value.why == "stale"


def test_the_pay_parameters_are_signed_with_the_merchant_key(fake):
    client = client_of(fake)
    prepay = client.jsapi("o7777777777", "Cola", 350, fake.new_user())
    params = client.pay_params(prepay)
    assert fake.check_pay_sign(params)["out_trade_no"] == "o7777777777"
    with pytest.raises(Exception):
        fake.check_pay_sign({**params, "package": "prepay_id=wxother"})


def test_oauth_gives_the_openid_once_per_code(fake):
    client, openid = client_of(fake), fake.new_user()
    code = fake.issue_code(openid)
    assert client.openid(code) == openid
    with pytest.raises(Refused) as e:
        client.openid(code)
    assert e.value.code == "40029"
    assert client.authorize_url("http://cloud.test/back", "s1").startswith(fake.url + "/connect/oauth2/authorize?")


def test_the_trade_bill_is_downloaded_checked_and_read_in_fen(fake, keys):
    client = client_of(fake)
    when = datetime(2026, 12, 6, 3, 0, tzinfo=timezone.utc)  # 11:00 in Beijing
    for no, total in (("o8888888801", 350), ("o8888888802", 1999)):
        client.jsapi(no, "Cola", total, fake.new_user())
        fake.pay(no, when=when, notify=False)
    data = client.trade_bill("2026-12-06")
    assert data.count(b"\n`") == 3  # two trades and the summary row, every field behind a backquote
    lines = bill.parse(data, keys.mchid)
    assert sorted((ln.out_trade_no, ln.kind, ln.amount, ln.fee) for ln in lines) == [
        ("o8888888801", "capture", 350, 2), ("o8888888802", "capture", 1999, 12)]
    assert all(ln.at == when and ln.currency == "CNY" for ln in lines)


def bill_text(fake, keys, refund=False) -> str:
    client = client_of(fake)
    client.jsapi("o9999999999", "Cola, large", 350, fake.new_user())
    fake.pay("o9999999999", notify=False)
    if refund:
        client.refund("refund-1", "o9999999999", 100, 350)
    return fake.bill(fake.trades["o9999999999"]["success_time"][:10])


def test_a_refund_in_the_bill_is_read_and_a_comma_in_a_name_is_kept(fake, keys):
    lines = bill.parse(bill_text(fake, keys, refund=True).encode(), keys.mchid)
    assert sorted((ln.kind, ln.amount, ln.fee) for ln in lines) == [("capture", 350, 2), ("refund", 100, -1)]


@pytest.mark.parametrize("spoil, reason", [
    (lambda t: t.rsplit("总交易单数", 1)[0], "truncated"),
    (lambda t: "\n".join(t.split("\n")[:1] + t.split("\n")[2:]), "not what the rows add up to"),
    (lambda t: t.replace("`3.50", "`3.60", 1), "not what the rows add up to"),
    (lambda t: t.replace("`1900000109", "`1900000999"), "merchant 1900000999's"),
    (lambda t: "date,amount\n2026-01-01,3.50\n", "not a WeChat Pay trade bill"),
    (lambda t: t.replace("`0.02", "`0.020", 1), "not an amount in yuan"),
    (lambda t: "", "empty"),
])
def test_a_bill_truncated_altered_or_of_another_merchant_is_refused(fake, keys, spoil, reason):
    with pytest.raises(bill.BillRefused, match=reason):
        bill.parse(spoil(bill_text(fake, keys)).encode(), keys.mchid)


@given(st.integers(-10**13, 10**13))
def test_yuan_with_two_decimals_read_back_are_the_same_fen(n):
    assert bill.fen(yuan(n), "here") == n  # exactly: 0.29 yuan is 29 fen, never 28.999...


@pytest.mark.parametrize("text", ["1.5", "1", "1.005", "1,00", "¥1.00", "1e2", " 1.00", "NaN", ""])
def test_an_amount_not_in_yuan_with_two_decimals_is_refused(text):
    with pytest.raises(bill.BillRefused, match="not an amount in yuan with two decimals"):
        bill.fen(text, "here")


@pytest.mark.parametrize("text", ["2026-13-01 10:00:00", "2026-12-06 24:00:00", "2026-12-06T10:00:00", "2026-12-06"])
def test_a_time_that_is_not_a_beijing_time_is_refused(text):
    with pytest.raises(bill.BillRefused, match="is not a time as YYYY-MM-DD HH:MM:SS"):
        bill.when(text, "here")
