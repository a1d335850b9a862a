"""A customer pays by Alipay: real processes throughout (the broker, `vend-cloud` configured for Alipay with key
files of mode 0600, the fake of Alipay's gateway as its own process `python -m tests.fakes.alipay`, and a
`vend-controller` on a simulated machine). Registration signs the withholding agreement on the fake's page,
a purchase is paid on the drop (once, also when Alipay's answer is lost), a jam takes nothing, Alipay's
notifications reach the cloud signed, a manager's refund goes to Alipay, and an agreement the customer ends
in their Alipay app makes the shop ask them to choose again."""

import itertools
import json
import os
import re
import subprocess
import sys
import urllib.parse
from datetime import datetime, timedelta

import httpx
import pytest

from tests.e2e.harness import Customer, Machine, Proc, free_port, tail, wait_until
from tests.e2e.harness import Cloud as CloudProc
from cloud.payments.alipay.client import AlipayClient
from tests.fakes.alipay import CHINA, Keys

APP_ID = "2021000000000009"
PID = "2088000000000009"
_phones = itertools.count(13700000001)


class AlipayFakeProc:
    """The fake of Alipay's gateway as its own process, and its control endpoints."""

    def __init__(self, workdir: str, keys_dir: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc([sys.executable, "-m", "tests.fakes.alipay", "--port", str(self.port), "--keys", keys_dir,
                          "--app-id", APP_ID, "--pid", PID], os.path.join(workdir, f"alipay-{self.port}.log"))

    def start(self) -> None:
        self.proc.start()

        def up():
            if not self.proc.alive():
                raise AssertionError(f"the Alipay fake exited:\n{tail(self.proc.log_path)}")
            try:
                return httpx.get(self.url + "/_fake/state", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "the Alipay fake to answer")

    def stop(self) -> None:
        self.proc.stop()

    def state(self) -> dict:
        return httpx.get(self.url + "/_fake/state", timeout=10).json()

    def trades_of(self, order_id: str) -> list[dict]:
        return [t for no, t in self.state()["trades"].items() if no.startswith(order_id + "_")]

    def control(self, what: str, **form) -> None:
        assert httpx.post(f"{self.url}/_fake/{what}", data=form, timeout=10).status_code == 200


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("alipay-keys")
    Keys.generate().write(folder)
    return str(folder)


@pytest.fixture(scope="module")
def alipay(database, tmp_path_factory, keys_dir):
    """A fresh fake for each database run (the bill of one run must not list the other run's trades)."""
    fake = AlipayFakeProc(str(tmp_path_factory.mktemp("alipay")), keys_dir)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def cloud(database, broker, tmp_path_factory, alipay, keys_dir):
    """The cloud taking Alipay (this module's own, in place of conftest's)."""
    c = CloudProc(broker, str(tmp_path_factory.mktemp("cloud")), db_url=database, demo_topups=False, extra=(
        "--alipay-app-id", APP_ID, "--alipay-pid", PID, "--alipay-gateway", alipay.url + "/gateway.do",
        "--alipay-private-key-file", os.path.join(keys_dir, "app_private.pem"),
        "--alipay-public-key-file", os.path.join(keys_dir, "alipay_public.pem"), "--alipay-timeout", "2"))
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def machine(cloud, broker, tmp_path_factory):
    m = Machine(cloud, broker, str(tmp_path_factory.mktemp("machines")), "a1", drop_delay=0.2, jam="B2")
    m.start()
    m.stock()
    yield m
    m.proc.stop()


def signed_up(cloud, machine, alipay) -> Customer:
    """A phone scans, registers choosing Alipay, agrees on Alipay's page and comes back to the menu."""
    customer = Customer(cloud, "Alipay Customer", f"+86{next(_phones)}")
    assert customer.scan(machine).status_code == 303
    r = customer.register(f"/m/{machine.id}", method="alipay")
    assert r.status_code == 303 and r.headers["location"].startswith(cloud.url + "/pay/alipay/agreement/sign?"), r.text
    on_the_way = customer.http.get(r.headers["location"].replace(cloud.url, ""))
    url = on_the_way.headers["refresh"].removeprefix("0; url=")
    assert on_the_way.status_code == 200 and url.startswith(alipay.url + "/gateway.do?")
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200 and "Agree and sign" in page.text
    action = re.search(r"action='([^']+)'", page.text).group(1)
    agreed = httpx.post(alipay.url + action, data={"choice": "agree"}, timeout=10)
    assert agreed.status_code == 303 and agreed.headers["location"].startswith(cloud.url + "/pay/alipay/")
    back = customer.http.get(agreed.headers["location"].replace(cloud.url, ""))
    assert back.status_code == 303 and back.headers["location"] == f"/m/{machine.id}", back.text
    return customer


def bought(customer, machine, slot="A1") -> str:
    r = customer.buy(machine, slot)
    assert r.status_code == 303, r.text
    return r.headers["location"].rsplit("/", 1)[1]


def ops_of(cloud, order_id):
    return cloud.db("SELECT op, status FROM payment_ops WHERE order_id = ? ORDER BY id", (order_id,))


def test_registration_signs_the_agreement_and_a_purchase_is_paid_once_on_the_drop(cloud, machine, alipay):
    customer = signed_up(cloud, machine, alipay)
    (reference,) = [r for (r,) in cloud.db("SELECT reference FROM mandates WHERE provider = 'alipay' AND "
                                           "status = 'active'")]
    assert alipay.state()["agreements"][reference]["status"] == "NORMAL"
    order_id = bought(customer, machine, "A2")  # cola, 3.50
    settled = customer.wait_settled(order_id)
    assert settled["status"] == "succeeded"
    wait_until(lambda: ops_of(cloud, order_id) == [("authorise", "succeeded"), ("capture", "succeeded")], 15,
               "the capture to be recorded")
    (trade,) = alipay.trades_of(order_id)
    assert (trade["amount"], trade["total_amount"], trade["trade_status"]) == (350, "3.50", "TRADE_SUCCESS")
    assert cloud.db("SELECT kind FROM txns WHERE order_id = ?", (order_id,)) == [("capture",)]
    # Alipay's trade notification reached the cloud, signed, and was answered "success".
    wait_until(lambda: any(n["params"].get("out_trade_no", "").startswith(order_id) and "success" in n["answers"]
                           for n in alipay.state()["notices"]), 15, "the trade notification to be answered")


def test_a_jam_takes_nothing_from_alipay(cloud, machine, alipay):
    customer = signed_up(cloud, machine, alipay)
    order_id = bought(customer, machine, "B2")
    settled = customer.wait_settled(order_id)
    assert settled["status"] != "succeeded"
    wait_until(lambda: ("void", "succeeded") in ops_of(cloud, order_id), 15, "the void")
    assert alipay.trades_of(order_id) == []
    assert cloud.db("SELECT COUNT(*) FROM txns WHERE order_id = ?", (order_id,)) == [(0,)]


def test_an_answer_lost_after_alipay_paid_is_queried_and_the_customer_pays_once(cloud, machine, alipay):
    customer = signed_up(cloud, machine, alipay)
    alipay.control("fault", kind="lost", method="alipay.trade.pay")
    order_id = bought(customer, machine, "A1")
    assert customer.wait_settled(order_id)["status"] == "succeeded"
    wait_until(lambda: ("capture", "succeeded") in ops_of(cloud, order_id), 30, "the capture after the query")
    assert len(alipay.trades_of(order_id)) == 1
    assert cloud.db("SELECT kind FROM txns WHERE order_id = ?", (order_id,)) == [("capture",)]


def test_a_managers_refund_goes_to_alipay(cloud, machine, alipay):
    customer = signed_up(cloud, machine, alipay)
    order_id = bought(customer, machine, "B1")  # chips, 6.00
    assert customer.wait_settled(order_id)["status"] == "succeeded"
    wait_until(lambda: ("capture", "succeeded") in ops_of(cloud, order_id), 15, "the capture")
    r = cloud.api("POST", f"/api/v1/orders/{order_id}/refund",
                  {"reason": "the bag was open", "key": "refund-alipay-0001", "amount": 250})
    assert (r["status"], r["refunded"]) == ("succeeded", 250)
    refunds = [f for f in alipay.state()["refunds"] if f["out_trade_no"].startswith(order_id)]
    assert [f["amount"] for f in refunds] == [250]


def test_the_alipay_bill_imports_through_vendctl_and_matches_the_journal(cloud, alipay, keys_dir, tmp_path):
    """The operator fetches the day's trade bill from Alipay (its download URL, then the zip of GBK CSV files)
    and imports it: every capture and refund of the runs above is matched, and the fees are posted."""
    with open(os.path.join(keys_dir, "app_private.pem"), "rb") as f, \
            open(os.path.join(keys_dir, "alipay_public.pem"), "rb") as g:
        client = AlipayClient(APP_ID, f.read(), g.read(), alipay.url + "/gateway.do")
    day = datetime.now(CHINA).date()
    answer = client.bill_url(day.isoformat())
    assert answer.ok, answer.reason
    bill = tmp_path / "alipay-trade-bill.zip"
    bill.write_bytes(httpx.get(answer.body["bill_download_url"], timeout=10).content)
    code, out, err = vendctl(cloud, "reconcile", "--statement", str(bill), "--provider", "alipay")
    assert code == 0, err
    trades = alipay.state()["trades"]
    assert f"{len(trades) + 1} lines, {len(trades) + 1} new" in out  # every trade, and the one refund
    fee = sum(t["fee"] for t in trades.values())  # the fake keeps 0.6 % of each trade, rounded to the fen
    assert fee > 0 and f"fees posted: ¥{fee // 100}.{fee % 100:02d}" in out
    code, out, err = vendctl(cloud, "reconcile", "--from", (day - timedelta(days=1)).isoformat(),
                             "--to", (day + timedelta(days=2)).isoformat(), "--json")
    mismatches = json.loads(out)["mismatches"]
    assert [m for m in mismatches if m["kind"].startswith("statement_") or m["kind"].startswith("journal_not")] == []
    code, out, err = vendctl(cloud, "reconcile", "--statement", str(bill), "--provider", "alipay")
    assert code == 0 and f"{len(trades) + 1} new" not in out and " 0 new" in out  # imported once


def vendctl(cloud, *argv):
    env = {**os.environ, "VEND_CLOUD_URL": cloud.url, "VEND_TOKEN": cloud.token}
    p = subprocess.run([sys.executable, "-m", "cloud.cli", *argv], capture_output=True, text=True, env=env, timeout=60)
    return p.returncode, p.stdout, p.stderr


def test_an_agreement_ended_in_the_alipay_app_asks_the_customer_to_choose_again(cloud, machine, alipay):
    customer = signed_up(cloud, machine, alipay)
    (reference,) = [r for (r,) in cloud.db("SELECT reference FROM mandates WHERE provider = 'alipay' AND "
                                           "status = 'active' ORDER BY updated_at DESC LIMIT 1")]
    trades = len(alipay.state()["trades"])
    alipay.control("unsign", agreement_no=reference)
    wait_until(lambda: cloud.db("SELECT status FROM mandates WHERE reference = ?", (reference,)) == [("revoked",)],
               15, "the unsign notification")
    r = customer.buy(machine, "A1")
    assert r.status_code == 303 and r.headers["location"].startswith("/account/payment?why=again"), r.text
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(r.headers["location"]).query)["next"] == [f"/m/{machine.id}"]
    assert len(alipay.state()["trades"]) == trades
