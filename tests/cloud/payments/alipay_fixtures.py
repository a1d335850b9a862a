"""The Alipay fake's keys, a running fake, a provider wired to it, and the contract tests' world."""

from __future__ import annotations

import urllib.parse
import urllib.request
import weakref
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from cloud.payments.alipay import Alipay, AlipayClient
from cloud.payments.alipay.client import order_of
from cloud.payments.outbox import payment_ops
from tests.fakes.alipay import AlipayFake, Keys

APP_ID = "2021000000000001"
PID = "2088000000000001"
NOW = datetime(2026, 12, 5, 2, 0, tzinfo=timezone.utc)
LATER = datetime(2026, 12, 6, 2, 0, tzinfo=timezone.utc)
_keys: list[Keys] = []


def keys() -> Keys:
    """One set of test keys per run (making RSA keys takes a while)."""
    if not _keys:
        _keys.append(Keys.generate())
    return _keys[0]


@pytest.fixture(scope="session")
def alipay_keys() -> Keys:
    return keys()


@pytest.fixture
def fake(alipay_keys):
    fake = AlipayFake(alipay_keys, app_id=APP_ID, pid=PID)
    fake.start()
    yield fake
    fake.stop()


def provider_for(fake: AlipayFake, timeout_s: float = 5.0, notify_url: str = "") -> Alipay:
    client = AlipayClient(APP_ID, fake.keys.app_private, fake.keys.alipay_public, fake.gateway, timeout_s, notify_url)
    return Alipay(client)


def open_page(url: str) -> str:
    """The agreement page at ``url``, as a browser gets it; the token of its form."""
    page = urllib.request.urlopen(url).read().decode()
    return page.split("action='")[1].split("'")[0].rsplit("/", 1)[1]


def sign_up(engine, provider: Alipay, fake: AlipayFake, customer_id: int, now=NOW) -> dict:
    """Registration's agreement, signed on the fake's page; the return's parameters recorded as the return page
    does. Returns those parameters."""
    with engine.begin() as conn:
        first = provider.enrol(conn, customer_id, "http://shop.test/m/M1", now)
        assert first == "http://shop.test/pay/alipay/agreement/sign?next=%2Fm%2FM1"
        url = provider.agreement_page(conn, customer_id, "http://shop.test", "/m/M1")
    target = fake.sign_agreement(open_page(url), agree=True)
    back = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(target).query))
    with engine.begin() as conn:
        assert provider.signed(conn, provider.client.verified({k: v for k, v in back.items() if k != "next"}),
                               now) == customer_id
    return back


class AlipayWorld:
    """Alipay against its fake (a real HTTP server in a thread), customer 1 with a signed agreement."""

    answers_at_once = False  # the second ask answers before the worker sent the first

    def __init__(self, engine):
        self.engine, self.fake = engine, AlipayFake(keys(), app_id=APP_ID, pid=PID)
        self.fake.start()
        weakref.finalize(self, self.fake.stop)
        self.provider = provider_for(self.fake)
        sign_up(engine, self.provider, self.fake, 1)

    def confirm(self, o, ok=True):
        """Alipay's answer to an authorisation is the agreement check the worker makes: played here, as the
        sandbox's world plays its webhook (``deliver`` leaves authorisations waiting for it)."""
        with self.engine.begin() as conn:
            conn.execute(payment_ops.update().where(payment_ops.c.order_id == o.id, payment_ops.c.op == "authorise",
                                                    payment_ops.c.status == "queued").values(next_try_at=NOW))
        self._deliver()

    def deliver(self):
        with self.engine.begin() as conn:
            conn.execute(payment_ops.update().where(payment_ops.c.op == "authorise", payment_ops.c.status == "queued",
                                                    payment_ops.c.attempts == 0).values(next_try_at=LATER))
        self._deliver()

    def _deliver(self):
        while self.provider.deliver_due(self.engine, clock=lambda: NOW):
            pass

    def snapshot(self):
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(payment_ops)).scalar()
        return rows, len(self.fake.trades), len(self.fake.refunds)

    def refunded_at_provider(self, o):
        self.deliver()
        return sum(t["refunded"] for no, t in self.fake.trades.items() if order_of(no) == o.id)
