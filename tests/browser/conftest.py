"""Browser fixtures: Debian's Chromium driven by Playwright, against real processes (a broker, the cloud,
simulated machines), on SQLite. The helpers the tests call (``shot``, ``sign_in``, ...) are in
``tests/browser/browsing.py``.

Without /usr/bin/chromium or Playwright these tests skip; with VEND_REQUIRE_BROWSER=1 (set by .ci/run)
they fail instead.
"""

import os

import pytest

from tests.e2e.harness import Cloud, Machine, running_broker

CHROMIUM = os.environ.get("VEND_CHROMIUM", "/usr/bin/chromium")
PHONE = {"viewport": {"width": 360, "height": 740}, "device_scale_factor": 2, "is_mobile": True,
         "has_touch": True}
DESK = {"viewport": {"width": 1280, "height": 860}}
# Chrome DevTools' "Slow 3G" preset: 400 ms round trip, about 50 KB/s each way.
SLOW_3G = {"offline": False, "latency": 400, "downloadThroughput": 500 * 1024 // 8,
           "uploadThroughput": 500 * 1024 // 8}


def _unavailable(why: str):
    if os.environ.get("VEND_REQUIRE_BROWSER") == "1":
        pytest.fail(f"VEND_REQUIRE_BROWSER=1 but {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install -e '.[dev]')")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no Chromium at {CHROMIUM} (apt install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def _context(browser, lang: str, **kind):
    context = browser.new_context(locale=lang, extra_http_headers={"Accept-Language": lang}, **kind)
    context.set_default_timeout(15_000)
    # Anything the pages' content policy blocked (a script, a style, a picture from elsewhere), for _close.
    context.vend_blocked = []

    def watch(page):
        page.on("console", lambda m: m.type == "error" and "Content Security Policy" in m.text
                and context.vend_blocked.append(f"{page.url}: {m.text}"))

    context.on("page", watch)
    return context


def _close(context) -> None:
    blocked = context.vend_blocked
    context.close()
    assert not blocked, "the content policy blocked: " + "; ".join(blocked)


@pytest.fixture
def phone(browser):
    """A phone (360 × 740) whose browser asks for English, on a slow 3G connection."""
    context = _context(browser, "en", **PHONE)
    page = context.new_page()
    slow_3g(page)
    yield page
    _close(context)


@pytest.fixture
def desk(browser):
    """A manager's desktop browser, asking for English."""
    context = _context(browser, "en", **DESK)
    yield context.new_page()
    _close(context)


@pytest.fixture
def new_page(browser):
    """Any other browser: ``new_page(lang="zh-CN", phone=True)``; ``script=False``: JavaScript off."""
    contexts = []

    def make(lang: str = "en", phone: bool = False, slow: bool = False, script: bool = True):
        context = _context(browser, lang, java_script_enabled=script, **(PHONE if phone else DESK))
        context.vend_script = script  # shot() checks a page through script; with it off, it cannot
        contexts.append(context)
        page = context.new_page()
        if slow:
            slow_3g(page)
        return page

    yield make
    for c in contexts:
        _close(c)


def slow_3g(page) -> None:
    session = page.context.new_cdp_session(page)
    session.send("Network.enable")
    session.send("Network.emulateNetworkConditions", SLOW_3G)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    yield from running_broker(str(tmp_path_factory.mktemp("broker")))


@pytest.fixture(scope="module")
def cloud(broker, tmp_path_factory):
    c = Cloud(broker, str(tmp_path_factory.mktemp("cloud")))
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def machine(cloud, broker, tmp_path_factory):
    """m1, stocked with the harness's four products, dropping quickly."""
    m = Machine(cloud, broker, str(tmp_path_factory.mktemp("machines")), "m1", drop_delay=0.3)
    m.start()
    m.stock()
    yield m
    m.proc.stop()
