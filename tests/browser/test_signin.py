"""Issue 13 #5 in a real browser: a form on another site cannot touch a customer's account, and a customer
who changes phones brings their wallet over with a one-time code sent by e-mail (a local SMTP server,
aiosmtpd, that the cloud process sends through)."""

import email
import re

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import expect

from tests.browser.browsing import scan_url, shot
from tests.browser.test_customer import top_up
from tests.e2e.harness import Cloud, free_port, wait_until

PHONE = "+86 139 5550 0101"


class Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture(scope="module")
def mailbox():
    box = Mailbox()
    server = Controller(box, hostname="127.0.0.1", port=free_port())
    server.start()
    yield box, server.port
    server.stop()


@pytest.fixture(scope="module")
def cloud(broker, mailbox, tmp_path_factory):
    """This module's cloud sends sign-in codes by e-mail, to the mailbox above."""
    _, port = mailbox
    c = Cloud(broker, str(tmp_path_factory.mktemp("cloud")), extra=(
        "--smtp-host", "127.0.0.1", "--smtp-port", str(port), "--smtp-security", "none",
        "--smtp-from", "codes@vend.example"))
    c.start()
    yield c
    c.stop()


def test_a_customer_brings_their_wallet_to_a_new_phone_with_a_code_by_email(cloud, machine, mailbox, new_page):
    box, _ = mailbox
    old = new_page(phone=True)
    old.goto(scan_url(cloud, machine))
    old.get_by_label(re.compile("Your name")).fill("Ann")
    old.get_by_label(re.compile("Phone number")).fill(PHONE)
    old.get_by_label(re.compile("E-mail")).fill("ann@example.com")
    old.get_by_role("button", name="Register").click()
    old.wait_for_url(re.compile(rf"/m/{machine.id}$"))
    top_up(old, "20")

    new = new_page(phone=True)
    new.goto(scan_url(cloud, machine))
    new.get_by_role("link", name=re.compile("Sign in with a code")).click()
    new.get_by_label("Phone number").fill(PHONE)
    new.get_by_role("button", name="Send me a code").click()
    expect(new.get_by_text(re.compile("we sent a code"))).to_be_visible()
    shot(new, "customer-signin-code")
    wait_until(lambda: box.messages, 20, "the sign-in code's e-mail")
    (message,) = box.messages
    assert message["To"] == "ann@example.com"
    code = re.search(r"\b(\d{6})\b", message.get_payload(decode=True).decode()).group(1)
    new.get_by_label("The 6-digit code").fill(code)
    new.get_by_role("button", name="Sign in").click()
    new.wait_for_url(re.compile(rf"/m/{machine.id}$"))
    expect(new.locator("#balance")).to_have_text(re.compile(r"20\.00"))
    shot(new, "customer-signed-in-on-a-new-phone")
    old.goto(f"{cloud.url}/wallet")
    expect(old.locator("#balance")).to_have_text(re.compile(r"20\.00")), "the old phone keeps its cookie"


def test_a_form_on_another_site_cannot_register_over_a_customer(cloud, machine, new_page):
    phone = new_page(phone=True)
    phone.goto(scan_url(cloud, machine))
    phone.get_by_label(re.compile("Your name")).fill("Bo")
    phone.get_by_label(re.compile("Phone number")).fill("+86 139 5550 0202")
    phone.get_by_role("button", name="Register").click()
    phone.wait_for_url(re.compile(rf"/m/{machine.id}$"))
    cookie = lambda: next(c["value"] for c in phone.context.cookies() if c["name"] == "vend_customer")  # noqa: E731
    before = cookie()
    # A page on another site whose button posts a registration to the cloud.
    phone.route("http://evil.example/", lambda route: route.fulfill(content_type="text/html", body=(
        f'<form method="post" action="{cloud.url}/register"><input name="name" value="Mallory">'
        '<input name="phone" value="+8613955509999"><input name="payment_method" value="wallet">'
        '<button>Win a prize</button></form>')))
    phone.goto("http://evil.example/")
    phone.get_by_role("button", name="Win a prize").click()
    expect(phone.get_by_role("heading", level=1)).to_have_text("This form came from another site")
    assert cookie() == before
    assert cloud.db("SELECT COUNT(*) FROM customers WHERE phone = '+8613955509999'")[0][0] == 0
