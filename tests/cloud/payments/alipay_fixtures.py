"""The Alipay fake's keys and a running fake, for the Alipay tests."""

from __future__ import annotations

import pytest

from tests.fakes.alipay import AlipayFake, Keys

APP_ID = "2021000000000001"
PID = "2088000000000001"


@pytest.fixture(scope="session")
def alipay_keys() -> Keys:
    return Keys.generate()


@pytest.fixture
def fake(alipay_keys):
    fake = AlipayFake(alipay_keys, app_id=APP_ID, pid=PID)
    fake.start()
    yield fake
    fake.stop()
