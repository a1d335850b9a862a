"""13 #7: rate limits on what a stranger can repeat cheaply: QR landings, registration, staff sign-in,
top-ups (and one-time codes, through the same Limiter): 429 with Retry-After, a page in the reader's language
or JSON for the API; per client address (X-Forwarded-For only from a trusted proxy) and per phone."""

import time

import pytest
from fastapi.testclient import TestClient

import cloud.app
from cloud.people import staff
from cloud.core.db import utcnow
from cloud.web import limits
from cloud.web.limits import Limiter, Rate, parse_limits
from protocol import token as qrtoken
from tests.cloud_fixtures import post_form
from tests.cloud_fixtures import MACHINE, SECRET, add_machine, fast_hashes, idle_cloud  # noqa: F401  (fixture)

PW = "violet-tractor-harbour-91"


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_a_bucket_allows_its_count_at_once_then_refills_evenly():
    clock = Clock()
    lim = Limiter({"otp_phone": Rate(3, 60), "otp_address": None}, clock=clock)
    assert [lim.hit("otp_phone", "+86138") for _ in range(4)] == [True, True, True, False]
    assert lim.hit("otp_phone", "+86139"), "another phone has its own bucket"
    assert lim.retry_after("otp_phone", "+86138") == 20
    clock.t += 19
    assert not lim.hit("otp_phone", "+86138")
    clock.t += 1
    assert lim.hit("otp_phone", "+86138") and not lim.hit("otp_phone", "+86138")
    assert all(lim.hit("otp_address", "1.2.3.4") for _ in range(1000)), "off: no limit"
    with pytest.raises(limits.RateLimited) as e:
        lim.check("otp_phone", "+86138")
    assert e.value.retry_after == 20
    with pytest.raises(KeyError):
        lim.hit("nonsense", "x")


def test_the_limits_are_the_defaults_changed_by_the_setting():
    got = parse_limits("register_address=2/60, otp_phone=off")
    assert got["register_address"] == Rate(2, 60.0) and got["otp_phone"] is None
    assert got["landing_address"] == Rate.parse(limits.DEFAULTS["landing_address"])
    assert set(parse_limits("off").values()) == {None}
    for bad, says in (("register=2/60", "register"), ("login_address=lots", "login_address"),
                      ("topup_phone=0/60", "topup_phone"), ("otp_phone=5/-1", "otp_phone")):
        with pytest.raises(ValueError, match=says):
            parse_limits(bad)


@pytest.fixture
def app(tmp_path):
    made = []

    def make(**options):
        var = tmp_path / f"cloud-{len(made)}"
        var.mkdir()
        made.append(var)
        obj = idle_cloud(var, f"sqlite:///{var}/c.db", demo_topups=True, **options)
        with obj.engine.begin() as conn:
            add_machine(conn)
            staff.add_staff(conn, "mia", "manager", utcnow(), staff.hash_password(PW), False)
        return cloud.app.create_app(obj, "admintoken", b"k" * 32)
    return make


def phone_client(app, address="203.0.113.7", **kw) -> TestClient:
    return TestClient(app, follow_redirects=False, client=(address, 50000), **kw)


def scan(c):
    return c.get(f"/q/{qrtoken.make(MACHINE, SECRET.encode(), time.time(), 5)}")


def register(c, phone):
    return post_form(c, "/register", dict(name="Ann", phone=phone, payment_method="wallet", next="/m/m-1"))


def test_qr_landings_from_one_address_are_limited_with_a_translated_page(app):
    a = app(rate_limits="landing_address=5/60")
    with phone_client(a) as c, phone_client(a, "198.51.100.9") as other:
        assert [scan(c).status_code for _ in range(5)] == [303] * 5
        r = scan(c)
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 12
        assert r.headers["content-type"].startswith("text/html") and "Too many tries" in r.text
        zh = c.get(f"/q/{qrtoken.make(MACHINE, SECRET.encode(), time.time(), 5)}", headers={"Accept-Language": "zh-CN"})
        assert zh.status_code == 429 and "尝试次数过多" in zh.text
        assert scan(other).status_code == 303, "another address is not limited"


def test_registration_is_limited_per_address_and_per_phone(app):
    a = app(rate_limits="register_address=3/600,register_phone=2/600")
    with phone_client(a) as c:
        codes = [register(c, f"+861380000000{i}").status_code for i in range(4)]
        assert codes == [303, 303, 303, 429]
    with phone_client(a, "198.51.100.1") as c1, phone_client(a, "198.51.100.2") as c2, \
            phone_client(a, "198.51.100.3") as c3:
        # One number tried from three addresses: its own bucket (formatting does not make it another number).
        assert register(c1, "+86 139 0000 0001").status_code == 303
        assert register(c2, "+8613900000001").status_code == 200  # registered already: offered a sign-in code
        r = register(c3, "+86-139-0000-0001")
        assert r.status_code == 429 and "retry-after" in r.headers


def test_the_default_limits_stop_a_registration_flood(app):
    """The attack run's 300 registrations in 8.5 s: now most are refused."""
    a = app()
    with phone_client(a) as c:
        codes = [register(c, f"+8613{i:09d}").status_code for i in range(60)]
    assert codes.count(303) == 30 and codes.count(429) == 30


def test_staff_sign_in_is_limited_json_for_the_api_and_a_page_for_the_dashboard(app):
    a = app(rate_limits="login_address=3/300")
    with phone_client(a) as c:
        for _ in range(3):
            assert c.post("/api/v1/login", json={"username": "mia", "password": "wrong"}).status_code == 401
        r = c.post("/api/v1/login", json={"username": "mia", "password": PW})
        assert r.status_code == 429 and r.headers["content-type"] == "application/json"
        assert r.json()["error"].startswith("too many requests") and int(r.headers["retry-after"]) >= 1
        page = c.post("/staff/login", data={"username": "mia", "password": PW})
        assert page.status_code == 429 and "Too many tries" in page.text


def test_a_username_is_limited_from_any_address(app):
    a = app(rate_limits="login_username=2/300")
    for i in range(2):
        with phone_client(a, f"198.51.100.{i + 1}") as c:
            assert c.post("/api/v1/login", json={"username": "mia", "password": "wrong"}).status_code == 401
    with phone_client(a, "198.51.100.9") as c:
        assert c.post("/api/v1/login", json={"username": "mia", "password": PW}).status_code == 429


def test_topups_are_limited_per_phone(app):
    a = app(rate_limits="topup_phone=2/60")
    with phone_client(a) as c:
        scan(c)
        assert register(c, "+8613800000001").status_code == 303
        codes = [post_form(c, "/wallet/topup", dict(amount="1", key=f"topup-key-{i}")).status_code for i in range(3)]
        assert codes == [303, 303, 429]


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(app):
    a = app(rate_limits="landing_address=2/60", trusted_proxy="127.0.0.1")
    with phone_client(a, "127.0.0.1") as proxy:
        for phone in ("203.0.113.1", "203.0.113.2"):
            assert [scan_from(proxy, phone) for _ in range(2)] == [303, 303]
        assert scan_from(proxy, "203.0.113.1") == 429
        assert scan_from(proxy, "6.6.6.6, 203.0.113.1") == 429, "what the client wrote left of it is not believed"
    with phone_client(a, "192.0.2.50") as direct:  # not a trusted proxy: its header is ignored
        assert [scan_from(direct, f"203.0.113.{i}") for i in range(3)] == [303, 303, 429]


def scan_from(c, forwarded_for):
    return c.get(f"/q/{qrtoken.make(MACHINE, SECRET.encode(), time.time(), 5)}",
                 headers={"X-Forwarded-For": forwarded_for}).status_code


def test_a_bad_limit_setting_stops_the_cloud_naming_it(app):
    with pytest.raises(SystemExit, match="register_adress"):
        app(rate_limits="register_adress=2/60")
    with pytest.raises(SystemExit, match="--trusted-proxy"):
        app(trusted_proxy="proxy.local")
