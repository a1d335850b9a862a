"""The Alipay client (cloud/payments/alipay/client.py): the real python-alipay-sdk against the local fake of
Alipay's gateway (tests/fakes/alipay.py)."""

import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cloud.payments.alipay.client import (AlipayClient, NotificationRefused, Refused, Unreachable, fen, load_key,
                                          order_of, out_trade_no, request_no, yuan)
from tests.cloud.payments.alipay_fixtures import APP_ID, alipay_keys, fake  # noqa: F401
from tests.fakes.alipay import Keys


def client_of(fake, keys=None, timeout_s=2.0, notify_url=""):
    keys = keys or fake.keys
    return AlipayClient(APP_ID, keys.app_private, keys.alipay_public, fake.gateway, timeout_s, notify_url)


def sign_agreement(fake, client, ext="c1"):
    """Open the agreement page as a browser would, agree; the agreement_no from the return."""
    page = urllib.request.urlopen(client.agreement_page(ext, "http://shop.test/back")).read().decode()
    action = page.split("action='")[1].split("'")[0]
    target = fake.sign_agreement(action.rsplit("/", 1)[1], agree=True)
    back = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(target).query))
    return back


def test_import_alipay_is_still_the_library():
    import alipay

    assert hasattr(alipay, "AliPay") and "site-packages" in alipay.__file__


def test_yuan_and_fen_are_exact_both_ways():
    assert yuan(1234) == "12.34" and yuan(5) == "0.05" and yuan(0) == "0.00"
    assert fen("12.34") == 1234 and fen("-0.06") == -6 and fen(" 100000000.01 ") == 10000000001
    for bad in ("12.3", "12", "1e3", "12.345", "", "¥1.00", "0x10.00"):
        with pytest.raises(ValueError):
            fen(bad)
    with pytest.raises(ValueError):
        yuan(-1)


def test_trade_numbers_are_alipays_alphabet_and_carry_the_order():
    no = out_trade_no("o0123456789abcdef0123", "capture:o0123456789abcdef0123")
    assert len(no) <= 64 and no.replace("_", "").isalnum()
    assert order_of(no) == "o0123456789abcdef0123"
    assert out_trade_no("o1", "capture:o1") != out_trade_no("o1", "charge:o1:dropped")
    odd = out_trade_no("order-with-dashes", "capture:k")
    assert odd.replace("_", "").isalnum() and order_of(odd) is None
    assert request_no("refund:k1") != request_no("refund:k2") and len(request_no("x")) <= 64


def test_keys_in_pem_or_bare_base64_and_a_wrong_one_named(alipay_keys):
    bare = b"".join(alipay_keys.app_private.splitlines()[1:-1])
    assert load_key(bare, True, "k") and load_key(alipay_keys.app_private, True, "k")
    with pytest.raises(ValueError, match="the file X must hold a private key"):
        load_key(alipay_keys.app_public, True, "the file X")
    with pytest.raises(ValueError, match="neither a PEM key"):
        load_key(b"not a key!", True, "k")


def test_the_signed_agreement_is_valid_and_a_payment_under_it_succeeds_once(fake):
    client = client_of(fake)
    back = sign_agreement(fake, client)
    agreement_no = client.verified(back)["agreement_no"]
    assert client.agreement_status(agreement_no) == "NORMAL"
    assert client.agreement_status("20260000000000000000") == "NOT_EXIST"
    trade = out_trade_no("o1", "capture:o1")
    answer = client.pay(trade, 350, "Cola", agreement_no)
    assert answer.ok and answer.body["total_amount"] == "3.50"
    again = client.pay(trade, 350, "Cola", agreement_no)
    assert not again.ok and again.sub_code == "ACQ.TRADE_HAS_SUCCESS"
    assert client.query(trade).body["trade_status"] == "TRADE_SUCCESS"
    assert client.query("nothing").sub_code == "ACQ.TRADE_NOT_EXIST"
    assert [t["amount"] for t in fake.trades.values()] == [350]


def test_a_revoked_agreement_cannot_be_charged(fake):
    client = client_of(fake)
    agreement_no = sign_agreement(fake, client)["agreement_no"]
    fake.unsign(agreement_no)
    assert client.agreement_status(agreement_no) == "UNSIGN"
    answer = client.pay("o2_x", 100, "Water", agreement_no)
    assert not answer.ok and answer.sub_code == "ACQ.AGREEMENT_STATUS_NOT_NORMAL"
    assert fake.trades == {}


def test_refunds_under_a_request_number_move_money_once(fake):
    client = client_of(fake)
    agreement_no = sign_agreement(fake, client)["agreement_no"]
    client.pay("o3_a", 600, "Chips", agreement_no)
    first = client.refund(200, "r1", out_trade_no="o3_a")
    assert first.ok and first.body["fund_change"] == "Y"
    repeat = client.refund(200, "r1", out_trade_no="o3_a")
    assert repeat.ok and repeat.body["fund_change"] == "N"
    assert client.refund(500, "r2", out_trade_no="o3_a").sub_code == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
    assert client.refund_query("r1", out_trade_no="o3_a").body["refund_amount"] == "2.00"
    assert "refund_amount" not in client.refund_query("r9", trade_no=fake.trades["o3_a"]["trade_no"]).body
    assert fake.trades["o3_a"]["refunded"] == 200


def test_timeouts_lost_answers_and_5xx_are_unreachable_and_the_query_finds_the_work(fake):
    client = client_of(fake, timeout_s=2.0)
    agreement_no = sign_agreement(fake, client)["agreement_no"]
    fake.fault("slow", "alipay.trade.pay", seconds=3.0)
    with pytest.raises(Unreachable):
        client.pay("o4_a", 200, "Water", agreement_no)
    fake.fault("lost", "alipay.trade.pay")
    with pytest.raises(Unreachable):
        client.pay("o4_b", 200, "Water", agreement_no)
    fake.fault("down")
    with pytest.raises(Unreachable):
        client.query("o4_a")
    assert client.query("o4_a").body["trade_status"] == "TRADE_SUCCESS"  # done, though its answer never came
    assert client.query("o4_b").body["trade_status"] == "TRADE_SUCCESS"


def test_an_answer_signed_by_someone_else_is_not_trusted(fake):
    other = Keys.generate()
    keys = Keys(fake.keys.app_private, fake.keys.app_public, other.alipay_private, other.alipay_public)
    with pytest.raises(Unreachable, match="signature"):
        client_of(fake, keys).query("o5")


def test_a_request_signed_with_another_app_key_is_refused(fake):
    other = Keys.generate()
    keys = Keys(other.app_private, other.app_public, fake.keys.alipay_private, fake.keys.alipay_public)
    with pytest.raises(Refused, match="invalid-signature"):
        client_of(fake, keys).query("o5")


def test_nobody_listening_is_unreachable(alipay_keys):
    client = AlipayClient(APP_ID, alipay_keys.app_private, alipay_keys.alipay_public, "http://127.0.0.1:9/gateway.do",
                          0.5)
    with pytest.raises(Unreachable):
        client.query("o6")


class Catcher(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self):
        Catcher.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Length", "7")
        self.end_headers()
        self.wfile.write(b"success")

    def log_message(self, *args):
        pass


def test_notifications_verify_and_forgeries_do_not(fake):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Catcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/notify"
        client = client_of(fake, notify_url=url)
        agreement_no = sign_agreement(fake, client)["agreement_no"]
        client.pay("o7_a", 350, "Cola", agreement_no)
        for _ in range(100):
            if len(Catcher.received) >= 2:
                break
            threading.Event().wait(0.05)
        forms = [dict(urllib.parse.parse_qsl(body.decode())) for body in Catcher.received[-2:]]
        kinds = sorted(client.verified(form)["notify_type"] for form in forms)
        assert kinds == ["dut_user_sign", "trade_status_sync"]
        trade = next(f for f in forms if f["notify_type"] == "trade_status_sync")
        with pytest.raises(NotificationRefused, match="signature"):
            client.verified({**trade, "total_amount": "0.01"})
        with pytest.raises(NotificationRefused, match="no sign"):
            client.verified({k: v for k, v in trade.items() if k != "sign"})  # no sign at all
        with pytest.raises(NotificationRefused, match="signature"):
            client.verified({**trade, "sign": "bm90IGEgc2lnbmF0dXJl"})
        with pytest.raises(NotificationRefused, match="signature"):
            client.verified({**trade, "sign": "%%%"})
    finally:
        server.shutdown()
        server.server_close()
