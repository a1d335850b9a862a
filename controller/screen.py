"""What the machine's screen shows: its name, its state and a QR code that rotates.

The QR holds ``{cloud}/q/{token}``; the token changes every ``rotate_s`` seconds and after every sale, so
a photo of an old code stops working. Its words are in the machine's languages (``[screen] languages``,
``controller/words.py``): each line in the first language, and under it the second, smaller and grey, so a
customer finds their own at a glance without a screen full of text.
"""

from __future__ import annotations

import functools
import logging
import os

import qrcode
from PIL import Image, ImageDraw, ImageFont

from protocol import token as qrtoken

from .words import FONT_PACKAGE, Said, font_file

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=64)
def _load_font(path: str, size: int):
    """A font file ('': the default font) at ``size``, read once: a CJK font is megabytes, and the screen is
    redrawn every few seconds, with a smaller size tried for every long line."""
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)


class Screen:
    """The screen of one machine: redrawn on its display when the QR token or the status line changes."""

    def __init__(self, display, machine_id: str, name: str, secret: bytes, cloud_url: str, rotate_s: float,
                 url_file: str = "", languages: tuple[str, ...] = ("en",), font: str = ""):
        self.display = display
        self.machine_id = machine_id
        self.name = name
        self.secret = secret
        self.cloud_url = cloud_url.rstrip("/")
        self.rotate_s = rotate_s
        self.url_file = url_file
        self.nonce = 0
        self.url = ""
        self._shown: tuple | None = None
        short_side = min(display.size)
        self._title_size = max(16, short_side // 14)
        self._text_size = max(12, short_side // 24)
        self._fonts: dict[str, str] = {}
        for lang in languages:
            path = font_file(lang, font)
            if path is None:
                # Drawn without its glyphs the line would be a row of boxes: better the other language alone.
                log.error("screen: no font with the glyphs of %s (install %s, or set [screen] font); the screen "
                          "leaves %s out", lang, FONT_PACKAGE, lang)
                continue
            self._fonts[lang] = path
        self.languages = tuple(self._fonts) or ("en",)
        self._fonts.setdefault("en", "")
        self._wide = font_file("zh_CN", font)  # for a name in Chinese characters, whatever the languages
        self.lines: list[tuple[str, str]] = []  # (language, text) of every line the last frame drew

    def _font(self, lang: str, size: int, text: str = ""):
        """The font of ``lang`` at ``size``; one with CJK glyphs for a text that has them (a machine's name)."""
        path = self._fonts.get(lang, "")
        if not path and self._wide and any(ord(c) >= 0x2E80 for c in text):
            path = self._wide
        return _load_font(path, size)

    def next_nonce(self) -> None:
        """After a sale: a fresh code at once (never the nonce the dashboard's copy of the screen uses)."""
        self.nonce = (self.nonce + 1) % qrtoken.MIRROR_NONCE

    def refresh(self, cloud_now: float, status: str | Said) -> bool:
        """Draw the screen if the token or the status changed; return True if it drew. A ``Said`` status is
        shown in the machine's languages, a ``str`` as it is."""
        tok = qrtoken.make(self.machine_id, self.secret, cloud_now, self.rotate_s, self.nonce)
        if self._shown == (tok, status):
            return False
        self.url = f"{self.cloud_url}/q/{tok}"
        self.display.show(self.render(self.url, status))
        self._shown = (tok, status)
        if self.url_file:
            tmp = self.url_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(self.url + "\n")
            os.replace(tmp, self.url_file)
        return True

    def render(self, url: str, status: str | Said) -> Image.Image:
        """The whole screen as a pillow image of the display's size."""
        width, height = self.display.size
        image = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(image)
        self.lines = []
        # The code above the words, or beside them: whichever leaves the bigger code. A portrait screen
        # stacks them; a landscape 800x480 one would push the words off its bottom edge if it did.
        stacked_limit = min(width * 5 // 6, height * 3 // 5)
        beside_limit = min(height * 5 // 6, width // 2)
        if stacked_limit >= beside_limit:
            code = self._code(url, stacked_limit)
            side = code.size[0]
            top = height // 6
            image.paste(code, ((width - side) // 2, top))
            centre, column = width // 2, width * 9 // 10
            title_y = height // 12
            below = top + side + (height - top - side) // 3
            status_y = below + height // 12
        else:
            code = self._code(url, beside_limit)
            side = code.size[0]
            margin = (height - side) // 2
            image.paste(code, (margin, margin))
            left = margin + side
            centre, column = (left + width) // 2, (width - left) * 9 // 10
            title_y = height // 6
            below = height // 2
            status_y = below + height // 8
        self._text(draw, (centre, title_y), self.name, self._title_size, column, "black")
        self._said(draw, (centre, below), Said("Scan to buy"), self._title_size, column, "black")
        self._said(draw, (centre, status_y + self._title_size // 3), status, self._text_size, column, "#444")
        return image

    def _said(self, draw: ImageDraw.ImageDraw, centre: tuple[int, int], text: str | Said, size: int, max_width: int,
              fill: str) -> None:
        """``text`` in the first language at ``centre``, and in the second just under it, smaller and grey."""
        if not isinstance(text, Said):
            self._text(draw, centre, text, size, max_width, fill)
            return
        first = text.in_language(self.languages[0])
        self._text(draw, centre, first, size, max_width, fill, self.languages[0])
        for lang in self.languages[1:2]:
            other = text.in_language(lang)
            if other != first:
                small = max(10, size * 3 // 5)
                self._text(draw, (centre[0], centre[1] + size * 4 // 5 + small // 2), other, small, max_width,
                           "#666", lang)

    def show_checks(self, checks, heading: str | Said) -> bool:
        """Draw the self-test (``controller/selftest.py``'s checks) in place of the QR; True if it drew."""
        shown = ("checks", heading, tuple((c.name, c.ok, c.detail) for c in checks))
        if self._shown == shown:
            return False
        self.display.show(self.render_checks(checks, heading))
        self._shown = shown
        return True

    def render_checks(self, checks, heading: str) -> Image.Image:
        """One line per check: a green tick, a red cross or a grey dot (still checking), its name and why."""
        width, height = self.display.size
        image = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(image)
        self.lines = []
        self._text(draw, (width // 2, height // 12), self.name, self._title_size, width * 9 // 10, "black")
        self._said(draw, (width // 2, height // 12 + self._title_size * 3 // 2), heading, self._text_size,
                   width * 9 // 10, "#444")
        top = height // 12 + self._title_size * 3 + self._text_size
        row = max(self._text_size * 2, (height - top) // max(1, len(checks) + 1))
        mark = min(row * 2 // 3, self._title_size)
        for i, check in enumerate(checks):
            y = top + i * row
            x = width // 20
            self._mark(draw, x, y, mark, check.ok)
            text = f"{check.name}: {check.detail}"
            size = self._text_size
            font = self._font(self.languages[0], size, text)
            # Long reasons are drawn smaller, never cut off: the reason is what the technician needs.
            while font.getlength(text) > width - x - mark * 2 and size > 8:
                size -= 1
                font = self._font(self.languages[0], size, text)
            self.lines.append((self.languages[0], text))
            draw.text((x + mark * 3 // 2, y + mark // 2), text, fill="black" if check.ok is not False else "#b00000",
                      font=font, anchor="lm")
        return image

    @staticmethod
    def _mark(draw: ImageDraw.ImageDraw, x: int, y: int, side: int, ok: bool | None) -> None:
        # Drawn as lines, not as the characters ✓ and ✗, which the default font may not have.
        line = max(2, side // 6)
        if ok is True:
            draw.line([(x, y + side // 2), (x + side // 3, y + side), (x + side, y)], fill="#008000", width=line)
        elif ok is False:
            draw.line([(x, y), (x + side, y + side)], fill="#c00000", width=line)
            draw.line([(x, y + side), (x + side, y)], fill="#c00000", width=line)
        else:
            draw.ellipse([x + side // 3, y + side // 3, x + side * 2 // 3, y + side * 2 // 3], fill="#888888")

    @staticmethod
    def _code(url: str, limit: int) -> Image.Image:
        qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2)
        qr.add_data(url)
        qr.make(fit=True)
        # A whole number of pixels per module: scaling a code by a fraction makes uneven modules that
        # phone cameras misread.
        qr.box_size = max(1, limit // (qr.modules_count + 2 * qr.border))
        return qr.make_image(fill_color="black", back_color="white").get_image().convert("RGB")

    def _text(self, draw: ImageDraw.ImageDraw, centre: tuple[int, int], text: str, size: int, max_width: int,
              fill: str, lang: str | None = None) -> None:
        # A long machine name or status is drawn smaller rather than cut off at the screen's edge.
        lang = lang or self.languages[0]
        font = self._font(lang, size, text)
        while font.getlength(text) > max_width and size > 8:
            size = max(8, min(size - 1, int(size * max_width / font.getlength(text))))
            font = self._font(lang, size, text)
        draw.text(centre, text, fill=fill, font=font, anchor="mm")
        self.lines.append((lang, text))
