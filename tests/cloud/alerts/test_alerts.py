"""Alerts that reach a person (cloud/alerts/): a jam stored by the real ingest raises an alert at once,
kept, e-mailed through a local SMTP server (aiosmtpd) and posted, signed, to a local webhook receiver;
a receiver that is down gets the delivery later; a person acknowledges and resolves it through the API and
the page; and the rules form keeps bad input with the error at the field, saving nothing."""

from __future__ import annotations

import email
import http.server
import json
import os
import re
import threading
import time

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

import cloud.app
from cloud.alerts import NAMES, alert_deliveries, alert_occurrences, alert_rules
from cloud.alerts.delivery import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from cloud.core.db import utcnow
from cloud.payments import Wallet
from cloud.payments.webhook import WebhookRefused, verify
from cloud.people import audit, staff
from cloud.sales import orders
from cloud.web import i18n
from protocol import topics
from protocol.messages import Status
from tests.cloud_fixtures import MACHINE, Chain, add_customer, add_machine, db_url, fast_hashes, idle_cloud  # noqa: F401
from tests.e2e.harness import free_port

BOOT = "bootstrap-token-for-tests"
ADMIN = {"Authorization": f"Bearer {BOOT}"}
PW = "violet-tractor-harbour-91"
SECRET = b"alert-webhook-secret-0123456789"
REFUSED = "nobody@example.com"


class Mailbox:
    """A local SMTP server's handler: keeps what it is sent, refuses the recipient REFUSED as a real server
    refuses an unknown mailbox."""

    def __init__(self):
        self.messages = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == REFUSED:
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, email.message_from_bytes(envelope.content)))
        return "250 OK"


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver (a chat bot's), checking each delivery's signature as docs/alerts.md says."""

    received: list = []
    refused: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            verify(SECRET, self.headers.get(TIMESTAMP_HEADER), self.headers.get(SIGNATURE_HEADER), body, time.time(),
                   300)
        except WebhookRefused as e:
            Receiver.refused.append(str(e))
            self.send_response(401)
            self.end_headers()
            return
        Receiver.received.append((self.headers.get(DELIVERY_HEADER), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def serve_webhooks(port: int) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def mailbox():
    box = Mailbox()
    server = Controller(box, hostname="127.0.0.1", port=free_port())
    server.start()
    yield box, server.port
    server.stop()


@pytest.fixture
def cloud_obj(tmp_path, db_url, mailbox):
    _, smtp_port = mailbox
    secret = tmp_path / "alert-webhook-secret"
    secret.write_bytes(SECRET + b"\n")
    os.chmod(secret, 0o600)
    obj = idle_cloud(tmp_path, db_url, smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_security="none",
                     smtp_from="vend@example.com", alert_retry_s=0.2, alert_check_s=0.2,
                     alert_webhook_secret_file=str(secret))
    with obj.engine.begin() as conn:
        add_machine(conn)
        for username, role in (("mia", "manager"), ("tom", "technician")):
            staff.add_staff(conn, username, role, utcnow(), staff.hash_password(PW), False)
    Receiver.received, Receiver.refused = [], []
    yield obj
    obj.alerter.stop()
    obj.engine.dispose()


@pytest.fixture
def client(cloud_obj):
    with TestClient(cloud.app.create_app(cloud_obj, BOOT, b"k" * 32), follow_redirects=False) as c:
        yield c


def sign_in(client, username):
    r = client.post("/staff/login", data={"username": username, "password": PW})
    assert r.status_code == 303, r.text


def jam(cloud_obj, chain: Chain, slot="A1", key="key-1"):
    """A customer buys from ``slot`` and the machine reports the vend failed: a real order, and the events
    through the cloud's real ingest (``Cloud.apply``, as the MQTT worker calls it)."""
    with cloud_obj.engine.begin() as conn:
        customer = add_customer(conn, phone=f"+86138000{len(chain.events):05d}")
        order, _ = orders.place(conn, Wallet(), customer, MACHINE, slot, key, utcnow(), 30)
    first = len(chain.events) + 1
    chain.add("vend.started", order_id=order.id, cmd_id=order.cmd_id, slot=slot)
    chain.add("vend.failed", order_id=order.id, slot=slot, reason="no drop")
    cloud_obj.apply([(topics.topic(MACHINE, "events"), chain.batch(first).encode())])
    return order


def wait_for(check, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {check.__doc__ or check}")


def occurrences(cloud_obj, **where):
    with cloud_obj.engine.connect() as conn:
        q = sa.select(alert_occurrences).order_by(alert_occurrences.c.id)
        for k, v in where.items():
            q = q.where(alert_occurrences.c[k] == v)
        return conn.execute(q).all()


def deliveries(cloud_obj):
    with cloud_obj.engine.connect() as conn:
        return conn.execute(sa.select(alert_deliveries).order_by(alert_deliveries.c.id)).all()


def rules_count(cloud_obj):
    with cloud_obj.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(alert_rules)).scalar()


# -- a jam reaches a person ------------------------------------------------------------------------------

def test_one_jam_raises_an_alert_at_once_by_e_mail_and_by_a_signed_webhook_retried_until_it_is_back(
        client, cloud_obj, mailbox):
    box, _ = mailbox
    webhook_port = free_port()
    r = client.post("/api/v1/alert-rules", headers=ADMIN, json={
        "kinds": ["out_of_service"], "channel": "email", "target": "ops@example.com", "note": "the office"})
    assert r.status_code == 201, r.text
    assert [(to, m["Subject"]) for to, m in box.messages] == [
        (["ops@example.com"], "[vend] test: Slot out of service: test-machine slot A1")]
    # The receiver is down: the rule is saved without its test (a test would fail and save nothing).
    r = client.post("/api/v1/alert-rules", headers=ADMIN, json={
        "kinds": ["out_of_service", "offline"], "channel": "webhook",
        "target": f"http://127.0.0.1:{webhook_port}/hook", "test": False})
    assert r.status_code == 201, r.text
    # The machine says it is online (as its retained status does on connect): no "offline" alert.
    cloud_obj.apply([(topics.topic(MACHINE, "status"), Status(online=True, firmware="1", ledger_head=0).encode())])
    cloud_obj.alerter.start()

    chain = Chain()
    order = jam(cloud_obj, chain, "A1")
    # One failed vend flags the slot; before alerts knew "out of service", it took three to raise anything.
    mail = wait_for(lambda: [m for to, m in box.messages if "test" not in m["Subject"]])
    assert mail[0]["Subject"] == "[vend] Slot out of service: m-1 slot A1"
    assert "slot A1 is out of service after a failed vend" in mail[0].get_payload()
    (alert,) = occurrences(cloud_obj, kind="out_of_service")
    assert (alert.machine_id, alert.slot, alert.resolved_at) == (MACHINE, "A1", None)
    with cloud_obj.engine.connect() as conn:
        assert orders.get(conn, order.id).status == "failed"

    def webhook_tried_twice():
        return [d for d in deliveries(cloud_obj) if d.channel == "webhook" and d.attempts >= 2]
    (failing,) = wait_for(webhook_tried_twice)
    assert failing.status == "queued" and failing.delivered_at is None and "ConnectError" in failing.last_error
    assert Receiver.received == []

    server = serve_webhooks(webhook_port)
    try:
        (delivery_id, body), = wait_for(lambda: Receiver.received)
    finally:
        server.shutdown()
    assert Receiver.refused == []
    assert body["type"] == "alert.raised" and body["alert"]["kind"] == "out_of_service"
    assert (body["alert"]["machine_id"], body["alert"]["slot"], body["alert"]["id"]) == (MACHINE, "A1", alert.id)
    (hook,) = [d for d in deliveries(cloud_obj) if d.channel == "webhook"]
    assert (hook.status, str(hook.id)) == ("delivered", delivery_id) and hook.attempts >= 3
    assert hook.delivered_at is not None
    (mailed,) = [d for d in deliveries(cloud_obj) if d.channel == "email"]
    assert (mailed.status, mailed.attempts, mailed.last_error) == ("delivered", 1, "")
    # The API shows the alert with its deliveries, as the page does.
    (shown,) = [a for a in client.get("/api/v1/alerts", headers=ADMIN).json() if a["kind"] == "out_of_service"]
    assert [(d["channel"], d["status"]) for d in shown["deliveries"]] == [("email", "delivered"),
                                                                          ("webhook", "delivered")]


def test_a_restock_clears_the_alert_by_itself_and_the_next_jam_raises_a_new_one(cloud_obj):
    chain = Chain()
    jam(cloud_obj, chain, "A2")
    cloud_obj.alerter.refresh()
    (first,) = occurrences(cloud_obj, kind="out_of_service")
    start = len(chain.events) + 1
    chain.add("restock", slot="A2", count=9)
    cloud_obj.apply([(topics.topic(MACHINE, "events"), chain.batch(start).encode())])
    cloud_obj.alerter.refresh()
    (cleared,) = occurrences(cloud_obj, kind="out_of_service")
    assert cleared.resolved_at is not None and cleared.resolved_by is None
    jam(cloud_obj, chain, "A2", key="key-2")
    cloud_obj.alerter.refresh()
    assert [a.resolved_at is None for a in occurrences(cloud_obj, kind="out_of_service")] == [False, True]


def test_a_look_that_began_before_another_process_raised_an_alert_does_not_resolve_it(cloud_obj):
    # The watcher reads the conditions before its write transaction (a look at a big fleet must not hold the
    # ingest's writer up). Another cloud process may raise an alert in between: this look never saw the jam,
    # and resolving it would only raise it again, with a second e-mail.
    chain = Chain()
    looked = utcnow()
    jam(cloud_obj, chain, "A2")
    cloud_obj.alerter.refresh()  # "the other process"
    (raised,) = occurrences(cloud_obj, kind="out_of_service")
    with cloud_obj.engine.begin() as conn:
        from cloud.alerts import occurrences as book  # noqa: PLC0415 - the module, not this file's helper
        book.refresh(conn, [], lambda kind, m: True, looked)  # what the slower look had found: nothing
    (still,) = occurrences(cloud_obj, kind="out_of_service")
    assert still.id == raised.id and still.resolved_at is None
    cloud_obj.alerter.refresh()  # a look that began after it judges it, as before
    assert occurrences(cloud_obj, kind="out_of_service")[0].resolved_at is None  # the jam is still there


# -- a person acknowledges and resolves ---------------------------------------------------------------------

def test_acknowledge_and_resolve_through_the_api_audited_and_not_raised_again_while_it_lasts(client, cloud_obj):
    chain = Chain()
    jam(cloud_obj, chain, "A1")
    (a,) = [x for x in client.get("/api/v1/alerts", headers=ADMIN).json() if x["kind"] == "out_of_service"]
    assert a["state"] == "open" and a["slot"] == "A1"
    r = client.post(f"/api/v1/alerts/{a['id']}/ack", headers=ADMIN).json()
    assert (r["state"], r["acknowledged_by"], r["changed"]) == ("acknowledged", "admin", True)
    assert client.post(f"/api/v1/alerts/{a['id']}/ack", headers=ADMIN).json()["changed"] is False
    r = client.post(f"/api/v1/alerts/{a['id']}/resolve", headers=ADMIN).json()
    assert (r["state"], r["resolved_by"]) == ("resolved", "admin")
    # The slot is still out of service, but a person said it is handled: not raised again while it lasts.
    cloud_obj.alerter.refresh()
    assert [x["id"] for x in client.get("/api/v1/alerts", headers=ADMIN).json() if x["kind"] == "out_of_service"] == []
    resolved = client.get("/api/v1/alerts?state=resolved", headers=ADMIN).json()
    assert [x["id"] for x in resolved] == [a["id"]]
    assert client.post("/api/v1/alerts/9999/ack", headers=ADMIN).status_code == 404
    assert client.get("/api/v1/alerts?state=bogus", headers=ADMIN).status_code == 422
    with cloud_obj.engine.connect() as conn:
        actions = [row["action"] for row in audit.query(conn, object_kind="alert")]
    assert actions == ["alert.resolve", "alert.acknowledge"]


def test_the_alerts_page_acknowledges_and_resolves_with_who_and_when(client, cloud_obj):
    chain = Chain()
    jam(cloud_obj, chain, "A1")
    sign_in(client, "tom")  # a technician clears faults
    page = client.get("/staff/alerts")
    assert page.status_code == 200 and "Slot out of service" in page.text and "Open: " in page.text
    (alert_id,) = re.findall(r'id="alert-(\d+)" data-kind="out_of_service"', page.text)
    # A form posted from another site with the session cookie changes nothing.
    r = client.post(f"/staff/alerts/{alert_id}/acknowledge", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert occurrences(cloud_obj, kind="out_of_service")[0].acknowledged_at is None
    r = client.post(f"/staff/alerts/{alert_id}/acknowledge")
    assert (r.status_code, r.headers["location"]) == (303, f"/staff/alerts?done=acknowledge#alert-{alert_id}")
    page = client.get(r.headers["location"]).text
    assert "The alert is acknowledged." in page and "Acknowledged by tom" in page
    r = client.post(f"/staff/alerts/{alert_id}/resolve")
    page = client.get(r.headers["location"]).text
    assert "Resolved by tom" in page
    card = page.split(f'id="alert-{alert_id}"')[1].split("</li>\n</ul>")[0]
    assert 'data-state="resolved"' in card and "/resolve" not in card.split("</li>")[-1]
    # The technician sees no rules (they hold people's addresses): a manager's.
    assert "Who is told" not in page
    assert client.post("/staff/alert-rules", data={"channel": "email"}).status_code == 403


def test_the_fleet_page_says_the_jam_and_colours_the_slot_tile_by_its_fault(client, cloud_obj):
    chain = Chain()
    jam(cloud_obj, chain, "A1")
    sign_in(client, "mia")
    fleet = client.get("/staff").text
    assert "Slot out of service (A1)" in fleet and 'class="fault"' in fleet
    machine = client.get(f"/staff/machines/{MACHINE}").text
    tile = re.search(r'<li data-slot="A1"[^>]*class="([^"]*)"', machine).group(1)
    assert "fault" in tile and "fill-" not in tile
    assert "fault" not in re.search(r'<li data-slot="A2"[^>]*class="([^"]*)"', machine).group(1)


# -- the rules form ---------------------------------------------------------------------------------

def rule_form(**changes):
    form = {"rule_id": "", "kinds": ["out_of_service", "offline"], "channel": "email", "target": "ops@example.com",
            "note": "night shift", "test": "yes"}
    form.update(changes)
    return form


@pytest.mark.parametrize("changes, field, message", [
    (dict(target="ops-at-example"), "target", "This is not an e-mail address"),
    (dict(channel="webhook", target="ftp://hooks.example/x"), "target", "is an http:// or https:// URL"),
    (dict(channel="webhook", target="http://user:pw@hooks.example/x"), "target", "with no password in it"),
    (dict(target=REFUSED), "target", "The test message did not arrive, so the rule was not saved: SMTP"),
    (dict(kinds=[]), "kinds", "Choose at least one kind of alert."),
])
def test_nonsense_in_the_rules_form_comes_back_with_the_error_at_the_field_and_nothing_saved(
        client, cloud_obj, mailbox, changes, field, message):
    sign_in(client, "mia")
    form = rule_form(**changes)
    r = client.post("/staff/alert-rules", data=form)
    assert r.status_code == 422
    error = re.search(rf'<span class="error field-error" id="err-{field}">([^<]*)</span>', r.text)
    assert error and message in error.group(1).replace("&#39;", "'"), r.text[-3000:]
    assert f'value="{form["target"]}"' in r.text and 'value="night shift"' in r.text  # kept as typed
    assert rules_count(cloud_obj) == 0
    if form["target"] == REFUSED:
        assert "550" in error.group(1) and mailbox[0].messages == []


def test_a_rule_is_added_tested_changed_and_deleted_from_the_page(client, cloud_obj, mailbox):
    box, _ = mailbox
    sign_in(client, "mia")
    r = client.post("/staff/alert-rules", data=rule_form())
    assert (r.status_code, r.headers["location"]) == (303, "/staff/alerts?done=rule#rules")
    assert [to for to, _ in box.messages] == [["ops@example.com"]]
    with cloud_obj.engine.connect() as conn:
        (rule,) = conn.execute(sa.select(alert_rules)).all()
    assert (rule.kinds, rule.channel, rule.created_by) == ("offline,out_of_service", "email", "mia")
    page = client.get(f"/staff/alerts?edit={rule.id}").text
    assert f'name="rule_id" value="{rule.id}"' in page and 'value="ops@example.com"' in page
    r = client.post("/staff/alert-rules", data=rule_form(rule_id=str(rule.id), kinds=["low_stock"], test=""))
    assert r.status_code == 303
    with cloud_obj.engine.connect() as conn:
        assert conn.execute(sa.select(alert_rules.c.kinds)).scalar() == "low_stock"
    assert len(box.messages) == 1, "no test asked, none sent"
    assert client.post(f"/staff/alert-rules/{rule.id}/delete").status_code == 303
    assert rules_count(cloud_obj) == 0


def test_the_api_refuses_bad_rules_naming_the_field(client, cloud_obj):
    r = client.post("/api/v1/alert-rules", headers=ADMIN, json={"kinds": ["jam"], "channel": "email",
                                                                "target": "a@b.example"})
    assert r.status_code == 422 and "kinds: no alert kind 'jam'" in r.json()["error"]
    r = client.post("/api/v1/alert-rules", headers=ADMIN, json={"kinds": ["offline"], "channel": "sms",
                                                                "target": "+86"})
    assert r.status_code == 422 and "channel: the channel is email or webhook" in r.json()["error"]
    assert rules_count(cloud_obj) == 0


def test_every_alert_kind_has_its_chinese_name():
    zh = i18n.catalog("zh-CN")
    assert [n for n in NAMES.values() if n not in zh] == []


def test_a_capture_the_platform_refused_for_good_is_an_alert_on_the_order_s_machine(cloud_obj):
    """The outbox's row is written here as a platform's worker leaves it after a refused capture
    (cloud/payments/outbox.py: status failed); the provider's own tests cover how it gets there."""
    from cloud.payments.outbox import payment_ops

    chain = Chain()
    order = jam(cloud_obj, chain, "A2")  # any order of m-1 will do
    now = utcnow()
    with cloud_obj.engine.begin() as conn:
        conn.execute(payment_ops.insert().values(
            provider="stripe", key=f"capture:{order.id}", op="capture", order_id=order.id, customer_id=order.customer_id,
            amount=order.amount, currency=order.currency, status="failed", reason="card_declined: expired card",
            attempts=1, next_try_at=now, created_at=now, updated_at=now))
    cloud_obj.alerter.refresh()
    (alert,) = occurrences(cloud_obj, kind="payment_failed")
    assert (alert.machine_id, alert.slot, alert.value) == (MACHINE, "", 1.0)
    assert f"capture of order {order.id} by stripe: card_declined: expired card" in alert.detail


def test_vendctl_alerts_lists_resolves_and_keeps_the_rules(client, cloud_obj, monkeypatch, capsys):
    import io

    import cloud.cli
    from tests.cloud_fixtures import ThroughTestClient

    def vendctl(*argv):
        monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: ThroughTestClient(client, ADMIN)))
        monkeypatch.setattr("sys.stdin", io.StringIO(""))
        code = cloud.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    chain = Chain()
    jam(cloud_obj, chain, "A1")
    code, out, _ = vendctl("alerts")
    line = next(x for x in out.splitlines() if "out_of_service" in x)
    alert_id, state, machine, kind, slot = line.split()[:5]
    assert (state, machine, kind, slot) == ("open", MACHINE, "out_of_service", "A1")
    code, out, _ = vendctl("alerts", "resolve", alert_id)
    assert (code, out.strip()) == (0, f"alert {alert_id} (out_of_service on m-1) resolved by admin")
    code, out, _ = vendctl("alerts", "resolve", alert_id)
    assert out.strip() == f"alert {alert_id} (out_of_service on m-1) resolved already (by admin)"
    assert "resolved by admin" in vendctl("alerts", "--state", "resolved")[1]

    code, out, err = vendctl("alerts", "rules", "add", "--kinds", "low_stock,offline", "--webhook",
                             "https://hooks.example/vend", "--note", "chat", "--no-test")
    assert (code, out.strip()) == (0, "rule 1 added: offline,low_stock to https://hooks.example/vend"), err
    code, _, err = vendctl("alerts", "rules", "add", "--kinds", "offline", "--email", "not-an-address")
    assert code == 1 and "target: 'not-an-address' is not an e-mail address" in err
    code, out, _ = vendctl("alerts", "rules", "change", "1", "--kinds", "door_open", "--no-test")
    assert out.strip() == "rule 1 changed: door_open to https://hooks.example/vend"
    code, out, _ = vendctl("alerts", "rules")
    assert out.splitlines()[1].split() == ["1", "webhook", "https://hooks.example/vend", "door_open", "chat"]
    assert vendctl("alerts", "rules", "delete", "1")[1].strip() == "rule 1 deleted"
    assert vendctl("alerts", "rules")[1].strip() == "no rules: alerts are kept but sent to no one"
