"""Page weight and load time: the customer's pages on a phone over slow 3G, the dashboard on a desk.

Real processes (the broker, the cloud, one simulated machine) and Debian's Chromium through Playwright.
For each page: the bytes and requests it costs with an empty cache, counted until the network is idle
(lazy pictures included), and its load time (the navigation's loadEventEnd), the median of ``--runs``
visits. The baseline, measured the same way in the same run, is the smallest page the cloud serves (``/api/v1/health``, about 100 bytes): what the network
and the browser cost before the page's own weight counts.

    python bench/pages.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from _fleet import broker_kind, fleet
from harness import Customer, Machine, wait_until

CHROMIUM = os.environ.get("VEND_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
PHONE = {"viewport": {"width": 360, "height": 740}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
# Chrome DevTools' "Slow 3G": 400 ms round trip, about 50 KB/s each way.
SLOW_3G = {"offline": False, "latency": 400, "downloadThroughput": 500 * 1024 // 8,
           "uploadThroughput": 500 * 1024 // 8}
PASSWORD = "correct horse battery staple 42"


def visit(context, url: str, slow: bool) -> dict:
    """One visit in a fresh page with the cache off: bytes and requests, and the load time in ms."""
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    if slow:
        cdp.send("Network.emulateNetworkConditions", SLOW_3G)
    sizes = []
    cdp.on("Network.loadingFinished", lambda e: sizes.append(e["encodedDataLength"]))
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")  # lazy pictures, the screen mirror: weight counts them too
    timing = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
    load_ms = json.loads(timing)["loadEventEnd"]
    page.close()
    return {"bytes": sum(sizes), "requests": len(sizes), "load_ms": load_ms}


def measure(context, url, runs: int, slow: bool, first_visit: bool = False) -> dict:
    """``url``: a string, or a function giving the URL of each visit. ``first_visit``: no cookies."""
    visits = []
    for _ in range(runs):
        if first_visit:
            context.clear_cookies()
        visits.append(visit(context, url() if callable(url) else url, slow))
    return {"bytes": max(v["bytes"] for v in visits), "requests": max(v["requests"] for v in visits),
            "load_ms_p50": round(statistics.median(v["load_ms"] for v in visits), 1),
            "load_ms_max": round(max(v["load_ms"] for v in visits), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--broker", choices=("mosquitto", "embedded"), default=broker_kind())
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with fleet(args.broker) as (work, broker, cloud), sync_playwright() as p:
        machine = Machine(cloud, broker, work, "page-1", drop_delay=0.05)
        machine.start()
        try:
            machine.stock()
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            results = run(args, browser, cloud, machine)
            browser.close()
        finally:
            machine.proc.stop()
    print(json.dumps(results, indent=2))
    return 0


def run(args, browser, cloud, machine: Machine) -> dict:
    # A customer with a wallet and one settled order, made over HTTP; the phone gets their cookies.
    customer = Customer(cloud, "Bench", "+8613600000001")
    customer.scan(machine)
    customer.register(f"/m/{machine.id}")
    customer.topup("50")
    order_id = customer.buy(machine, "A1").headers["location"].rsplit("/", 1)[1]
    customer.wait_settled(order_id)
    cloud.api("POST", "/api/v1/people", {"username": "bench-mgr", "role": "manager", "password": PASSWORD})

    phone = browser.new_context(**PHONE)
    phone.add_cookies([{"name": c.name, "value": c.value, "url": cloud.url} for c in customer.http.cookies.jar])
    stranger = browser.new_context(**PHONE)  # a first scan: no cookies
    desk = browser.new_context(viewport={"width": 1280, "height": 860})
    page = desk.new_page()
    page.goto(cloud.url + "/staff/login")
    page.fill("#username", "bench-mgr")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    wait_until(lambda: "/staff/login" not in page.url, 10, "the manager to sign in")
    page.close()

    def landing() -> str:
        with open(machine.url_file) as f:
            return f.read().strip()

    out = {"benchmark": "pages", "runs": args.runs, "network": "slow 3G (400 ms RTT, 50 KB/s) for the phone",
           "baseline": {"smallest response, slow 3G": measure(stranger, cloud.url + "/api/v1/health", args.runs,
                                                              True),
                        "smallest response, desk": measure(desk, cloud.url + "/api/v1/health", args.runs, False)},
           "phone (slow 3G)": {}, "desk": {}}
    # The QR token rotates; each visit scans the code showing then, as a phone at the machine would.
    out["phone (slow 3G)"]["first scan -> register"] = measure(stranger, landing, args.runs, True, first_visit=True)
    out["phone (slow 3G)"]["menu"] = measure(phone, f"{cloud.url}/m/{machine.id}", args.runs, True)
    out["phone (slow 3G)"]["order (settled)"] = measure(phone, f"{cloud.url}/orders/{order_id}", args.runs, True)
    out["phone (slow 3G)"]["wallet"] = measure(phone, f"{cloud.url}/wallet", args.runs, True)
    for name, path in (("fleet", "/staff"), ("machine", f"/staff/machines/{machine.id}"), ("sales", "/staff/sales"),
                       ("stock", "/staff/stock")):
        out["desk"][name] = measure(desk, cloud.url + path, args.runs, False)
    return out


if __name__ == "__main__":
    sys.exit(main())
