"""13 #6: under an https public URL every cookie the cloud sets is ``Secure`` and every response carries
HSTS; under http (the demo on a laptop) neither, since a Secure cookie would never come back over http."""

import time

import pytest
from fastapi.testclient import TestClient

import cloud.app
import cloud.core.settings
import cloud.service
from cloud.people import staff
from cloud.core.db import migrate, utcnow
from protocol import token as qrtoken
from tests.cloud_fixtures import post_form
from tests.cloud_fixtures import MACHINE, SECRET, add_machine, fast_hashes  # noqa: F401  (fixture)

PW = "violet-tractor-harbour-91"
HSTS = "max-age=31536000"


def make_client(tmp_path, public_url: str) -> TestClient:
    settings = cloud.core.settings.Settings(var=str(tmp_path), db=f"sqlite:///{tmp_path}/c.db", broker="127.0.0.1:1",
                                            public_url=public_url).resolve()
    obj = cloud.service.Cloud(settings)
    migrate(obj.engine)
    with obj.engine.begin() as conn:
        add_machine(conn)
        staff.add_staff(conn, "mia", "manager", utcnow(), staff.hash_password(PW), False)
    app = cloud.app.create_app(obj, "admintoken", b"k" * 32)
    return TestClient(app, follow_redirects=False, base_url=public_url.replace("vend.example.com", "testserver"))


def every_cookie(c: TestClient) -> dict[str, list[str]]:
    """Set-Cookie headers of every way the cloud gives a browser a cookie, by the path that set it."""
    got = {}
    for path, r in (
            ("/lang/zh-CN", c.get("/lang/zh-CN?next=/")),
            ("/q/", c.get(f"/q/{qrtoken.make(MACHINE, SECRET.encode(), time.time(), 5)}")),
            ("/register form", c.get("/register?next=/m/m-1")),
            ("/register", post_form(c, "/register", dict(name="Ann", phone="+8613800000001", payment_method="wallet",
                                                         next="/m/m-1"))),
            ("/staff/login", c.post("/staff/login", data={"username": "mia", "password": PW, "next": "/staff"})),
            ("/api/v1/login", c.post("/api/v1/login", json={"username": "mia", "password": PW}))):
        assert r.status_code < 400, (path, r.status_code, r.text)
        got[path] = r.headers.get_list("set-cookie")
        assert got[path], f"{path} set no cookie"
    return got


def test_under_https_every_cookie_is_secure_and_every_response_has_hsts(tmp_path):
    with make_client(tmp_path, "https://vend.example.com") as c:
        for path, cookies in every_cookie(c).items():
            for cookie in cookies:
                assert "secure" in cookie.lower().split("; "), f"{path}: {cookie}"
        for r in (c.get("/"), c.get("/api/v1/health"), c.get("/nope"), c.get("/static/style.css"),
                  c.get("/staff/sales")):
            assert r.headers.get("strict-transport-security") == HSTS, r.request.url


def test_under_http_no_cookie_is_secure_and_no_hsts(tmp_path):
    with make_client(tmp_path, "http://vend.example.com") as c:
        for path, cookies in every_cookie(c).items():
            for cookie in cookies:
                assert "secure" not in cookie.lower().split("; "), f"{path}: {cookie}"
        assert "strict-transport-security" not in c.get("/").headers
