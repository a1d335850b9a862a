"""The pages' languages: English and Simplified Chinese, chosen from the browser's Accept-Language and
switchable with a cookie; translations from the gettext catalogs in ``cloud/web/locale/<lang>/*.po``; money
in the currency's own format for the reader's locale (CLDR, through Babel).

Templates call ``_("Take your product!")`` or ``_("{n} left", n=3)``: the English text is the key, so a
missing translation shows English rather than nothing (``tests/test_i18n.py`` fails on any missing one).
Where one English word means two things, a gettext context (``msgctxt``) tells them apart:
``_("Order", context="purchase")`` is a purchase order, ``_("Order")`` a customer's.
"""

from __future__ import annotations

import glob
import os
import re
from decimal import Decimal
from functools import lru_cache

from babel import Locale
from babel.dates import format_datetime, format_skeleton
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, get_currency_precision
from jinja2 import pass_context

LANGUAGES = {"en": "English", "zh-CN": "中文"}
DEFAULT = "en"
COOKIE = "vend_lang"
LOCALE_DIR = os.path.join(os.path.dirname(__file__), "locale")


def _babel(lang: str) -> str:
    return lang.replace("-", "_")


@lru_cache(maxsize=None)
def catalog(lang: str) -> dict[str, str]:
    """English text -> this language's text, from every .po file of the language (one file per area)."""
    messages: dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(LOCALE_DIR, _babel(lang), "*.po"))):
        with open(path, "rb") as f:
            for message in read_po(f, locale=_babel(lang)):
                if message.id and message.string and not message.fuzzy:
                    messages[key(message.id, message.context)] = message.string
    return messages


def key(message: str, context: str | None = None) -> str:
    """A message's key in a catalog: gettext's own, the context and the text joined by EOT."""
    return f"{context}\x04{message}" if context else message


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    """The cookie if it names a language we have, else the first of the browser's languages we have."""
    if cookie in LANGUAGES:
        return cookie
    wanted = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        match = re.search(r"q=([^;\s]*)", params)
        if match:
            try:
                q = float(match.group(1))
            except ValueError:
                q = 0.0
        if tag and q > 0:
            wanted.append((-q, i, tag.strip().lower()))
    for _, _, tag in sorted(wanted):
        if tag.startswith("zh"):
            # Traditional-script tags (zh-TW, zh-HK, zh-Hant) read Simplified better than English.
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return DEFAULT


class Translator:
    """``_`` in a template: this language's text for an English message, with ``{name}`` fields filled."""

    def __init__(self, lang: str):
        self.lang = lang if lang in LANGUAGES else DEFAULT
        self.messages = catalog(self.lang) if self.lang != "en" else {}

    def __call__(self, message: str, context: str | None = None, **fields) -> str:
        text = self.messages.get(key(message, context), message)
        return text.format(**fields) if fields else text


def money(amount: int, currency: str, lang: str = DEFAULT) -> str:
    """An amount in the smallest unit, written the way the reader's locale writes that currency (what
    babel's ``format_currency`` writes, with the locale and its pattern looked up once: a page of a year's
    sales writes a thousand amounts)."""
    locale, pattern, digits = _money_format(currency, lang)
    return pattern.apply(Decimal(amount).scaleb(-digits), locale, currency=currency, currency_digits=True,
                         decimal_quantization=True, group_separator=True, numbering_system="latn")


@lru_cache(maxsize=256)
def _money_format(currency: str, lang: str):
    locale = _locale(lang)
    return locale, locale.currency_formats["standard"], get_currency_precision(currency)


@lru_cache(maxsize=None)
def _locale(lang: str) -> Locale:
    return Locale.parse(_babel(lang))


def number(value, lang: str = DEFAULT) -> str:
    return format_decimal(value, locale=_locale(lang))


def when(t, lang: str = DEFAULT, tz: str = "UTC") -> str:
    """A moment for people: short date and time in the reader's locale, in the given zone."""
    return format_datetime(t, "short", tzinfo=_tz(tz), locale=_locale(lang))


def day_label(d, lang: str = DEFAULT, skeleton: str = "MEd") -> str:
    """A calendar day for a column or a bar, short, in the reader's locale: "Sun, 12/6", "12/6周日"."""
    return format_skeleton(skeleton, d, locale=_locale(lang))


@lru_cache(maxsize=None)
def _tz(name: str):
    from zoneinfo import ZoneInfo
    return ZoneInfo(name)


def language_of(request) -> str:
    return negotiate(request.cookies.get(COOKIE), request.headers.get("accept-language"))


def context(request) -> dict:
    """What every page's template gets: the language, ``_``, and the switch to the other languages."""
    lang = language_of(request)
    cloud = getattr(request.app.state, "cloud", None)
    zone = getattr(getattr(cloud, "settings", None), "time_zone", "UTC") or "UTC"
    return {"lang": lang, "_": Translator(lang), "languages": LANGUAGES, "tz": zone,
            "here": request.url.path + (f"?{request.url.query}" if request.url.query else "")}


@pass_context
def money_filter(ctx, amount: int, currency: str) -> str:
    return money(amount, currency, ctx.get("lang", DEFAULT))


@pass_context
def number_filter(ctx, value) -> str:
    return number(value, ctx.get("lang", DEFAULT))


@pass_context
def day_filter(ctx, d, skeleton: str = "MEd") -> str:
    return day_label(d, ctx.get("lang", DEFAULT), skeleton)


@pass_context
def when_filter(ctx, t, tz: str | None = None) -> str:
    """A moment in the reader's language, in ``tz`` or else the fleet's zone (``--time-zone``)."""
    return when(t, ctx.get("lang", DEFAULT), tz or ctx.get("tz") or "UTC") if t is not None else ""

