"""Languages: every message a page shows has its Chinese text; the browser's choice is honoured; money
is written the currency's own way for each locale."""

import ast
import glob
import os
import re

from decimal import Decimal

import jinja2.nodes
import pytest
from babel.messages.pofile import read_po
from babel.numbers import format_currency, get_currency_precision
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.web import i18n
from cloud.web.pages import templates
from tests.tools import REPO

ROOT = str(REPO / "cloud")


def _literal_calls(calls, name_of, args_of, keywords_of):
    """(message, context) of every ``_("literal", context="literal")`` among parsed calls."""
    for call in calls:
        args = args_of(call)
        if name_of(call) == "_" and args and isinstance(getattr(args[0], "value", None), str):
            context = next((v for k, v in keywords_of(call) if k == "context"), None)
            yield args[0].value, context


def in_python(text: str):
    """Read with Python's own parser, so a message split over lines ("a" "b") is one message."""
    calls = (n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Call))
    yield from _literal_calls(calls, lambda c: getattr(c.func, "id", None), lambda c: c.args,
                              lambda c: [(k.arg, getattr(k.value, "value", None)) for k in c.keywords])


def in_template(text: str):
    """Read with Jinja's own parser (the environment the pages render through)."""
    calls = templates.env.parse(text).find_all(jinja2.nodes.Call)
    yield from _literal_calls(calls, lambda c: getattr(c.node, "name", None), lambda c: c.args,
                              lambda c: [(k.key, getattr(k.value, "value", None)) for k in c.kwargs])


def messages_used() -> dict[str, str]:
    found = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True)
                       + glob.glob(os.path.join(ROOT, "*", "templates", "*.html"))):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for message, context in (in_template(text) if path.endswith(".html") else in_python(text)):
            found.setdefault(i18n.key(message, context), os.path.relpath(path, ROOT))
    return found


def test_every_message_on_a_page_has_its_chinese_text():
    used = messages_used()
    assert len(used) > 400, "the pages' messages were found"
    assert "Take your product!" in used and i18n.key("Order", "purchase") in used
    zh = i18n.catalog("zh-CN")
    missing = sorted(f"{where}: {m!r}" for m, where in used.items() if m not in zh)
    assert not missing, "no zh_CN translation in cloud/web/locale/zh_CN/*.po for:\n" + "\n".join(missing)


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


@settings(max_examples=300, deadline=None)
@given(st.integers(-10**15, 10**15), st.sampled_from(["CNY", "USD", "EUR", "JPY", "KWD", "GBP", "HKD"]),
       st.sampled_from(sorted(i18n.LANGUAGES)))
def test_money_writes_what_babel_s_format_currency_writes(amount, currency, lang):
    """``money`` looks the locale and its pattern up once; what it writes is babel's own."""
    digits = get_currency_precision(currency)
    assert i18n.money(amount, currency, lang) == format_currency(
        Decimal(amount).scaleb(-digits), currency, locale=lang.replace("-", "_"), currency_digits=True)


def test_a_message_missing_from_the_catalog_shows_in_english_with_its_fields():
    _ = i18n.Translator("zh-CN")
    assert _("no such message {n}", n=3) == "no such message 3"
    assert _("Scan a machine") == "扫描售货机"
    assert i18n.Translator("xx")("Scan a machine") == "Scan a machine"
    assert _("Order", context="purchase") == "采购单" and _("Order") == "订单", "a context tells them apart"


def test_names_made_in_code_have_their_chinese_text():
    """Words a page looks up by a code (a purchase order's state) rather than writing them out."""
    from cloud.stock.pages import STATUS_NAMES

    zh = i18n.catalog("zh-CN")
    assert not [n for n in STATUS_NAMES.values() if i18n.key(n, "purchase") not in zh]
