"""The Stripe fake (tests/fakes/stripe.py) as its own process, and a `vend-cloud` whose Stripe keys (in
files of mode 0600) point at it: for the end-to-end and browser runs."""

import os
import sys

import httpx

from tests.e2e.harness import Cloud, Proc, free_port, tail, wait_until

API_KEY = "sk_test_e2e_0123456789abcdef"
WEBHOOK_SECRET = "whsec_e2e_0123456789abcdef"
HOOK = "/api/v1/payments/webhook/stripe"


class StripeProcess:
    """tests/fakes/stripe.py as its own process."""

    def __init__(self, workdir: str, webhook_url: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc([sys.executable, "-m", "tests.fakes.stripe", "--port", str(self.port), "--api-key", API_KEY,
                          "--webhook-url", webhook_url, "--webhook-secret", WEBHOOK_SECRET],
                         os.path.join(workdir, f"stripe-{self.port}.log"))

    def start(self) -> None:
        self.proc.start()

        def up():
            if not self.proc.alive():
                raise AssertionError(f"the Stripe fake exited:\n{tail(self.proc.log_path)}")
            try:
                return httpx.get(self.url + "/fake/objects", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "the Stripe fake to answer")

    def stop(self) -> None:
        self.proc.stop()

    def objects(self, kind: str) -> list[dict]:
        return httpx.get(f"{self.url}/fake/objects", params={"object": kind}, timeout=10).json()

    def intent_of(self, order_id: str) -> dict:
        found = [pi for pi in self.objects("payment_intent") if pi["metadata"].get("order_id") == order_id]
        assert len(found) == 1, found
        return found[0]


def stripe_cloud(broker, work: str, database: str = "", **kw) -> Cloud:
    """A cloud (not started) configured for Stripe, with the fake started as ``cloud.stripe``; the fake
    sends its signed webhooks to the cloud."""
    files = {}
    for name, text in (("stripe.key", API_KEY), ("stripe.whsec", WEBHOOK_SECRET)):
        files[name] = os.path.join(work, name)
        fd = os.open(files[name], os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
    c = Cloud(broker, work, db_url=database, **kw)
    stripe = StripeProcess(work, c.url + HOOK)
    c.proc.argv += ["--public-url", c.url, "--stripe-key-file", files["stripe.key"], "--stripe-webhook-secret-file",
                    files["stripe.whsec"], "--stripe-api-url", stripe.url]
    stripe.start()
    c.stripe = stripe
    return c
