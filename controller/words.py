"""What the machine's screen says, in each language it can say it: the English text is the key (as on the
cloud's pages), ``{fields}`` are filled in after the translation, and a text with no translation is shown in
English. ``[screen] languages`` picks the languages, the first one largest.

A language that is not written in Latin letters needs a font that has its glyphs: pillow's default font has
none for Chinese, so ``FONTS`` names the files Debian and Raspberry Pi OS install them as (the SD card's
first boot installs ``fonts-wqy-microhei``, see docs/languages.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# The screen's texts in each language but English; the English key is also what the screen shows in English.
CATALOGUE: dict[str, dict[str, str]] = {
    "en": {},
    "zh_CN": {
        "Scan to buy": "扫码购买",
        "Ready": "可以购买",
        "Offline - reconnecting": "暂时离线，正在重新连接",
        "Dropping {product} from {slot}...": "正在出货：{product}（{slot}）……",
        "Paid: press {item} on the machine for {product}": "已付款：请在机器上按 {item} 取 {product}",
        "your product": "您的商品",
        "Self-test: checking...": "自检中……",
        "Self-test: all passed": "自检：全部通过",
        "Self-test: FAILED - see the lines in red": "自检失败：见红色各行",
        "Self-test FAILED: this machine cannot sell": "自检失败：本机暂停服务",
        "Screen test": "屏幕测试",
    },
}
LANGUAGES = tuple(CATALOGUE)
# Languages drawn in a font of their own, and where Debian's packages put one (the first found is used).
FONTS: dict[str, tuple[str, ...]] = {
    "zh_CN": ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",  # fonts-wqy-microhei (the card installs it)
              "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",  # fonts-wqy-zenhei
              "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # fonts-noto-cjk
              "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),  # fonts-droid-fallback
}
FONT_PACKAGE = "fonts-wqy-microhei"


@dataclass(frozen=True)
class Said:
    """A text for the screen: its English ``template`` and the ``fields`` to fill in, said in a language."""

    template: str
    fields: tuple[tuple[str, str], ...] = ()

    def in_language(self, lang: str) -> str:
        text = CATALOGUE.get(lang, {}).get(self.template, self.template)
        values = {k: v.in_language(lang) if isinstance(v, Said) else v for k, v in self.fields}
        return text.format(**values) if values else text


def said(template: str, **fields) -> Said:
    """``said("Dropping {product} from {slot}...", product="Cola", slot="A1")``."""
    return Said(template, tuple(sorted(fields.items())))


def font_file(lang: str, choice: str = "") -> str | None:
    """The font file the screen draws ``lang`` with: ``choice`` if given, else the first of ``FONTS`` that is
    installed; "" for a language pillow's default font draws; None if the language needs a font and none is
    installed."""
    if lang not in FONTS:
        return ""
    for path in ((choice,) if choice else FONTS[lang]):
        if os.path.isfile(path):
            return path
    return None
