"""Languages: every message a page shows has its Chinese text; the browser's choice is honoured; money
is written the currency's own way for each locale."""

import glob
import os
import re

import pytest
from babel.messages.pofile import read_po

from cloud import i18n

ROOT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "cloud")
# _("...") or _('...') as written in templates and in the Python that makes page text.
CALL = re.compile(r"""(?<![A-Za-z0-9_])_\(\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')"""
                  r"""(?:\s*,\s*context\s*=\s*["']([^"']+)["'])?""")


def messages_used() -> dict[str, str]:
    found = {}
    files = glob.glob(os.path.join(ROOT, "templates", "*.html")) + glob.glob(os.path.join(ROOT, "**", "*.py"),
                                                                             recursive=True)
    for path in (p for p in files if not p.endswith("i18n.py")):  # its docstring shows examples
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for m in CALL.finditer(text):
            message = m.group(1) if m.group(1) is not None else m.group(2)
            message = message.encode().decode("unicode_escape").encode("latin-1").decode() if "\\" in message \
                else message
            found.setdefault(i18n.key(message, m.group(3)), os.path.relpath(path, ROOT))
    return found


def test_every_message_on_a_page_has_its_chinese_text():
    used = messages_used()
    assert len(used) > 1
    zh = i18n.catalog("zh-CN")
    missing = sorted(f"{where}: {m!r}" for m, where in used.items() if m not in zh)
    assert not missing, "no zh_CN translation in cloud/locale/zh_CN/*.po for:\n" + "\n".join(missing)


def test_no_message_is_translated_two_ways():
    """The catalogs are merged: the same English (in the same context) must mean one thing in all of them.
    Where it does not, the page gives a context: _("Order", context="purchase")."""
    seen, clashes = {}, []
    for path in sorted(glob.glob(os.path.join(i18n.LOCALE_DIR, "zh_CN", "*.po"))):
        with open(path, "rb") as f:
            for message in read_po(f):
                if not message.id:
                    continue
                where = (os.path.basename(path), message.string)
                k = i18n.key(message.id, message.context)
                if k in seen and seen[k][1] != message.string:
                    clashes.append(f"{message.id!r} ({message.context}): {seen[k]} against {where}")
                seen.setdefault(k, where)
    assert not clashes, "\n".join(clashes)


def test_a_translation_keeps_the_fields_of_its_message():
    zh = i18n.catalog("zh-CN")
    wrong = [m for m, t in zh.items()
             if set(re.findall(r"{(\w+)}", m.rpartition("\x04")[2])) != set(re.findall(r"{(\w+)}", t))]
    assert not wrong, f"fields differ between message and translation: {wrong}"


@pytest.mark.parametrize("cookie,header,lang", [
    (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
    (None, "en-GB,en;q=0.9", "en"),
    (None, "zh-TW", "zh-CN"),
    (None, "fr-FR,fr;q=0.9,zh;q=0.5", "zh-CN"),
    (None, "fr-FR", "en"),
    (None, "", "en"),
    (None, "en;q=0.2,zh;q=0.8", "zh-CN"),
    (None, "zh;q=0,en", "en"),
    (None, "zh;q=bogus,en", "en"),
    ("en", "zh-CN", "en"),
    ("zh-CN", "en", "zh-CN"),
    ("klingon", "zh-CN", "zh-CN"),
])
def test_the_language_comes_from_the_cookie_then_the_browser(cookie, header, lang):
    assert i18n.negotiate(cookie, header) == lang


@pytest.mark.parametrize("amount,currency,lang,text", [
    (1250, "CNY", "zh-CN", "¥12.50"),
    (1250, "CNY", "en", "CN¥12.50"),
    (123456, "USD", "en", "$1,234.56"),
    (123456, "EUR", "en", "€1,234.56"),
    (1500, "JPY", "en", "¥1,500"),
    (-350, "CNY", "zh-CN", "-¥3.50"),
    (0, "CNY", "zh-CN", "¥0.00"),
])
def test_money_is_written_the_currency_s_way_for_the_reader(amount, currency, lang, text):
    assert i18n.money(amount, currency, lang) == text


def test_a_message_missing_from_the_catalog_shows_in_english_with_its_fields():
    _ = i18n.Translator("zh-CN")
    assert _("no such message {n}", n=3) == "no such message 3"
    assert _("Scan a machine") == "扫描售货机"
    assert i18n.Translator("xx")("Scan a machine") == "Scan a machine"
    assert _("Order", context="purchase") == "采购单" and _("Order") == "订单", "a context tells them apart"


def test_names_made_in_code_have_their_chinese_text():
    """Words a page looks up by a code (a purchase order's state) rather than writing them out."""
    from cloud.dashboard.stock import STATUS_NAMES

    zh = i18n.catalog("zh-CN")
    assert not [n for n in STATUS_NAMES.values() if i18n.key(n, "purchase") not in zh]
