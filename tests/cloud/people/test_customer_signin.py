"""Issue 13 #5: a cross-site form cannot touch a customer's account, registration never replaces a phone's
customer cookie, and a customer gets back into their wallet on a new phone with a one-time code sent by
e-mail (a real SMTP server: aiosmtpd) or by text message (a real HTTP receiver standing in for a gateway)."""

import email
import http.server
import json
import os
import re
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from cloud import people
from cloud.core.db import utcnow
from cloud.core.settings import Settings
from cloud.people import codes, senders
from cloud.sales import orders
from tests.cloud.sales.test_web import balance, client, cloud_obj, count, customer, register, scan  # noqa: F401
from tests.cloud_fixtures import db_url, form_token, post_form  # noqa: F401  (fixture)
from tests.e2e.harness import free_port

EVIL = {"Origin": "https://evil.example"}
PHONE = "+86 138 0000 0001"


def customer_of(client) -> int | None:
    value = client.cookies.get(people.COOKIE)
    return int(value.rsplit(".", 1)[0]) if value else None


def topped_up(client, amount="20"):
    assert post_form(client, "/wallet/topup", dict(amount=amount, key="topup-key-1")).status_code == 303


# -- 1. a form from another site changes nothing -----------------------------------------------------

def test_a_cross_site_post_to_register_is_refused_and_the_victims_cookie_stays(client, cloud_obj, customer):
    before = client.cookies[people.COOKIE]
    r = client.post("/register", data=dict(name="Mallory", phone="+8613900000666", payment_method="wallet",
                                           next="/m/m-1", csrf=form_token(client)), headers=EVIL)
    assert r.status_code == 403 and "another site" in r.text
    assert people.COOKIE not in r.cookies and client.cookies[people.COOKIE] == before
    assert count(cloud_obj, people.customers) == 1


def test_a_cross_site_register_with_no_origin_and_no_token_is_refused(client, cloud_obj):
    """An old browser sends no Origin: the missing form token is what refuses it."""
    r = client.post("/register", data=dict(name="Mallory", phone="+8613900000666", payment_method="wallet"))
    assert r.status_code == 403 and people.COOKIE not in r.cookies
    assert count(cloud_obj, people.customers) == 0


@pytest.mark.parametrize("headers", [EVIL, {"Origin": "null"}, {"Referer": "https://evil.example/page"},
                                     {"Sec-Fetch-Site": "cross-site"}])
def test_cross_site_buy_and_top_up_are_refused_and_change_nothing(client, cloud_obj, customer, headers):
    topped_up(client)
    token = form_token(client)
    r = client.post("/wallet/topup", data=dict(amount="50", key="topup-key-2", csrf=token), headers=headers)
    assert r.status_code == 403 and "another site" in r.text
    scan(client)
    r = client.post("/m/m-1/buy", data=dict(slot="A1", key="buy-key-0001", csrf=token), headers=headers)
    assert r.status_code == 403
    assert balance(cloud_obj, customer) == 2000 and count(cloud_obj, people.customers) == 1
    assert count(cloud_obj, orders.orders) == 0


def test_a_form_token_from_another_phone_is_refused(client, cloud_obj, customer):
    token = form_token(client)
    client.cookies.delete("vend_form")
    r = client.post("/wallet/topup", data=dict(amount="50", key="topup-key-2", csrf=token))
    assert r.status_code == 403 and balance(cloud_obj, customer) == 0


def test_the_customer_forms_carry_the_token_and_a_same_site_post_works(client, cloud_obj, customer):
    scan(client)
    for path in ("/wallet", "/m/m-1"):
        assert 'name="csrf"' in client.get(path).text, path
    r = post_form(client, "/wallet/topup", dict(amount="5", key="topup-key-1"),
                  headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 303 and balance(cloud_obj, customer) == 500


# -- 2. registration never replaces a phone's customer --------------------------------------------------

def test_a_registered_phone_posting_register_is_sent_to_its_account(client, cloud_obj, customer):
    before = client.cookies[people.COOKIE]
    r = register(client, name="Someone", phone="+8613900000777", next="/m/m-1")
    assert (r.status_code, r.headers["location"]) == (303, "/m/m-1")
    assert people.COOKIE not in r.cookies and client.cookies[people.COOKIE] == before
    assert count(cloud_obj, people.customers) == 1
    r = client.get("/register?next=/wallet")
    assert (r.status_code, r.headers["location"]) == (303, "/wallet")


def test_registering_a_registered_number_offers_a_code_and_says_what_signin_says(client, cloud_obj, customer,
                                                                                 gateway):
    client.cookies.clear()
    taken = register(client, name="Mallory", phone=PHONE)
    client.cookies.clear()
    free = post_form(client, "/signin", dict(phone="+8613900000888", next="/m/m-1"))
    assert taken.status_code == free.status_code == 200
    assert people.COOKIE not in client.cookies and count(cloud_obj, people.customers) == 1
    assert "already registered" not in taken.text and "we sent a code" in taken.text
    main = lambda t: re.sub(r'value="[^"]*"|\+?[0-9 ]{6,}', "", t.split("<main>")[1].split("</main>")[0])  # noqa: E731
    assert main(taken.text) == main(free.text), "a registered number answers as an unknown one does"
    assert [body["to"] for _, body in gateway] == ["+8613800000001"], "the code went to the owner's phone"


# -- 3. a one-time code brings the wallet to a new phone ------------------------------------------------

class Mailbox:
    """A local SMTP server (aiosmtpd) that takes one login and keeps what it is sent."""

    def __init__(self, user="vend", password="mail-secret-1"):
        self.messages, self.logins = [], []
        self.user, self.password = user, password

    def authenticate(self, server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (
            self.user, self.password)
        self.logins.append((data.login.decode(), ok))
        return AuthResult(success=ok)

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def code(self) -> str:
        body = self.messages[-1].get_payload(decode=True).decode()
        return re.search(r"\b(\d{6})\b", body).group(1)


def secret_file(tmp_path, name, text, mode=0o600):
    path = tmp_path / name
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return str(path)


@pytest.fixture
def mailbox(cloud_obj, tmp_path):
    box = Mailbox()
    port = free_port()
    server = Controller(box, hostname="127.0.0.1", port=port, authenticator=box.authenticate,
                        auth_require_tls=False)
    server.start()
    s = cloud_obj.settings
    s.smtp_host, s.smtp_port, s.smtp_security, s.smtp_from = "127.0.0.1", port, "none", "vend@example.com"
    s.smtp_user, s.smtp_password_file = "vend", secret_file(tmp_path, "smtp-password", "mail-secret-1")
    cloud_obj.senders = senders.configured(s)
    yield box
    server.stop()


class Gateway(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Gateway.received.append((self.headers.get("Authorization"), json.loads(body)))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def gateway(cloud_obj, tmp_path):
    Gateway.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    s = cloud_obj.settings
    s.sms_url = f"http://127.0.0.1:{server.server_port}/send"
    s.sms_token_file = secret_file(tmp_path, "sms-token", "gateway-token-1")
    cloud_obj.senders = senders.configured(s)
    yield Gateway.received
    server.shutdown()


def new_phone(client):
    client.cookies.clear()


def test_a_customer_with_an_email_gets_their_wallet_on_a_new_phone_by_a_code(client, cloud_obj, mailbox):
    scan(client)
    assert post_form(client, "/register", dict(name="Ann", phone=PHONE, email="ann@example.com",
                                              payment_method="wallet", next="/m/m-1")).status_code == 303
    ann = customer_of(client)
    topped_up(client, "20")
    new_phone(client)
    r = post_form(client, "/signin", dict(phone="+86 138-0000-0001", next="/wallet"))
    assert r.status_code == 200 and "we sent a code" in r.text.lower()
    (message,) = mailbox.messages
    assert message["To"] == "ann@example.com" and message["From"] == "vend@example.com"
    assert mailbox.logins == [("vend", True)]
    r = post_form(client, "/signin/code", dict(phone=PHONE, code=mailbox.code(), next="/wallet"))
    assert (r.status_code, r.headers["location"]) == (303, "/wallet")
    assert customer_of(client) == ann
    assert "¥20.00" in client.get("/wallet").text


def test_the_code_goes_by_text_message_through_the_gateway_and_works_once(client, cloud_obj, customer, gateway):
    new_phone(client)
    post_form(client, "/signin", dict(phone=PHONE, next="/wallet"))
    ((auth, body),) = gateway
    assert auth == "Bearer gateway-token-1" and body["to"] == "+8613800000001"
    code = re.search(r"\b(\d{6})\b", body["text"]).group(1)
    assert post_form(client, "/signin/code", dict(phone=PHONE, code=code)).status_code == 303
    assert customer_of(client) == customer
    new_phone(client)
    r = post_form(client, "/signin/code", dict(phone=PHONE, code=code))
    assert r.status_code == 422 and people.COOKIE not in client.cookies


def test_the_code_is_asked_in_the_readers_language(client, customer, gateway):
    new_phone(client)
    post_form(client, "/signin", dict(phone=PHONE), headers={"Accept-Language": "zh-CN"})
    assert "验证码" in gateway[-1][1]["text"]


def test_a_wrong_code_five_times_ends_the_code(client, cloud_obj, customer, gateway):
    new_phone(client)
    post_form(client, "/signin", dict(phone=PHONE))
    code = re.search(r"\b(\d{6})\b", gateway[-1][1]["text"]).group(1)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(codes.MAX_ATTEMPTS):
        r = post_form(client, "/signin/code", dict(phone=PHONE, code=wrong))
        assert r.status_code == 422 and "wrong or has expired" in r.text
    assert post_form(client, "/signin/code", dict(phone=PHONE, code=code)).status_code == 422
    assert people.COOKIE not in client.cookies


def test_a_code_for_an_unknown_number_answers_as_a_wrong_code(client, cloud_obj, customer, gateway):
    new_phone(client)
    r = post_form(client, "/signin", dict(phone="+8613900000999"))
    assert r.status_code == 200 and gateway == []
    r = post_form(client, "/signin/code", dict(phone="+8613900000999", code="123456"))
    assert r.status_code == 422 and "wrong or has expired" in r.text


def test_codes_expire_are_stored_hashed_and_a_new_one_ends_the_old(cloud_obj):
    key, now = b"k" * 32, utcnow()
    with cloud_obj.engine.begin() as conn:
        ann = people.register(conn, "Ann", PHONE, "wallet", now, methods=["wallet"])
        first = codes.issue(conn, ann, now, key)
        second = codes.issue(conn, ann, now, key)
        stored = conn.execute(sa.select(codes.customer_codes.c.code_hash)).scalars().all()
        assert first not in "".join(stored) and second not in "".join(stored) and len(stored[0]) == 64
        assert not codes.redeem(conn, ann, first, now, key), "a newer code ends the older one"
        assert not codes.redeem(conn, ann, second, now + codes.CODE_TTL + timedelta(seconds=1), key)
        third = codes.issue(conn, ann, now, key)
        assert codes.redeem(conn, ann, third, now + timedelta(minutes=9), key)
        assert not codes.redeem(conn, ann, third, now + timedelta(minutes=9), key)


def test_few_codes_are_sent_per_hour(cloud_obj):
    key, now = b"k" * 32, utcnow()
    with cloud_obj.engine.begin() as conn:
        ann = people.register(conn, "Ann", PHONE, "wallet", now, methods=["wallet"])
        sent = [codes.issue(conn, ann, now, key) for _ in range(codes.MAX_PER_HOUR + 2)]
        assert sent.count(None) == 2
        assert codes.issue(conn, ann, now + timedelta(hours=1, seconds=1), key) is not None


def test_without_a_sender_the_signin_page_says_to_ask_the_operator(client, cloud_obj, customer):
    assert cloud_obj.senders == []
    new_phone(client)
    r = client.get("/signin")
    assert r.status_code == 200 and "ask the operator" in r.text.lower()
    r = register(client, name="Ann", phone=PHONE)
    assert "ask the operator" in r.text.lower() and people.COOKIE not in client.cookies


def test_a_secret_file_others_can_read_is_refused_without_showing_it(cloud_obj, tmp_path):
    s = cloud_obj.settings
    s.sms_url, s.sms_token_file = "http://127.0.0.1:9/send", secret_file(tmp_path, "tok", "leaky-token", 0o644)
    with pytest.raises(SystemExit) as e:
        senders.configured(s)
    assert "0600" in str(e.value) and "leaky-token" not in str(e.value)


def test_a_registration_may_give_an_email_and_a_bad_one_is_named(client, cloud_obj):
    r = post_form(client, "/register", dict(name="Ann", phone=PHONE, email="not-an-address", payment_method="wallet"))
    assert r.status_code == 422 and "e-mail" in r.text.lower() and count(cloud_obj, people.customers) == 0


@pytest.mark.parametrize("options,named", [
    (dict(smtp_host="mail.example"), "--smtp-from"),
    (dict(smtp_host="mail.example", smtp_from="a@b.example", smtp_security="ssl"), "--smtp-security"),
    (dict(smtp_host="mail.example", smtp_from="a@b.example", smtp_user="u"), "--smtp-password-file"),
    (dict(sms_url="ftp://gw.example/send"), "--sms-url"),
    (dict(sms_url="https://gw.example/send"), "--sms-token-file"),
    (dict(sms_timeout_s=0), "--sms-timeout"),
])
def test_code_sender_settings_are_checked_naming_the_option(tmp_path, options, named):
    with pytest.raises(SystemExit) as e:
        Settings(var=str(tmp_path), **options).resolve()
    assert named in str(e.value)
