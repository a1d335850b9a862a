"""What the browser tests do with a page: keep a screenshot of it (in ``test-artifacts/screenshots/``, which
the README names, so a person can look at them) after checking it, scan a machine, sign a person in."""

import os
import re

from tests.tools import REPO

SHOTS = str(REPO / "test-artifacts" / "screenshots")

# Every form field a person can fill has a label, every picture a text, every button and link a name, and
# the page a language and a title: checked on every page a test keeps a screenshot of.
UNLABELLED = """() => {
  const named = el => (el.labels && el.labels.length) || el.getAttribute("aria-label") ||
                      el.getAttribute("aria-labelledby") || el.getAttribute("title");
  const out = [];
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.type === "hidden" || el.type === "submit" || el.type === "button") continue;
    if (!named(el)) out.push("field without a label: " + el.outerHTML.slice(0, 120));
  }
  for (const el of document.querySelectorAll("img")) {
    if (!el.hasAttribute("alt")) out.push("picture without alt: " + el.outerHTML.slice(0, 120));
  }
  for (const el of document.querySelectorAll("button, a[href], input[type=submit]")) {
    const text = (el.innerText || el.value || "").trim();
    if (!text && !el.getAttribute("aria-label") && !el.getAttribute("title") && !el.querySelector("img[alt], svg title"))
      out.push("control without a name: " + el.outerHTML.slice(0, 120));
  }
  if (!document.documentElement.lang) out.push("no lang on <html>");
  if (!document.title.trim()) out.push("no <title>");
  return out;
}"""


def shot(page, name: str) -> str:
    """Keep what the page looks like now as test-artifacts/screenshots/<name>.png (the whole page), after
    checking that its fields are labelled and its pictures and controls named."""
    page.wait_for_load_state("load")  # a click may have started a navigation that has not finished
    if getattr(page.context, "vend_script", True) and page.url.startswith("http"):
        problems = page.evaluate(UNLABELLED)
        assert not problems, f"{page.url}: " + "; ".join(problems)
    os.makedirs(SHOTS, exist_ok=True)
    path = os.path.join(SHOTS, re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + ".png")
    page.screenshot(path=path, full_page=True)
    return path


def scan_url(cloud, machine) -> str:
    """The URL in the QR code the machine shows now."""
    with open(machine.url_file) as f:
        return f.read().strip()


STAFF_PASSWORD = "correct horse battery staple 42"


def add_staff(cloud, username: str, role: str, password: str = STAFF_PASSWORD) -> str:
    """A staff member with a password of their own (no forced change at first sign-in)."""
    cloud.api("POST", "/api/v1/people", {"username": username, "role": role, "password": password})
    return password


def sign_in(page, cloud, username: str, password: str = STAFF_PASSWORD) -> None:
    page.goto(cloud.url + "/staff/login")
    page.get_by_label(re.compile("Username|用户名")).fill(username)
    page.get_by_label(re.compile("Password|密码")).fill(password)
    page.get_by_role("button", name=re.compile("Sign in|登录")).click()
    page.wait_for_load_state()
