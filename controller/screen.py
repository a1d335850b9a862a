"""What the machine's screen shows: its name, its state and a QR code that rotates.

The QR holds ``{cloud}/q/{token}``; the token changes every ``rotate_s`` seconds and after every sale, so
a photo of an old code stops working.
"""

from __future__ import annotations

import logging
import os

import qrcode
from PIL import Image, ImageDraw, ImageFont

from protocol import token as qrtoken

log = logging.getLogger(__name__)


class Screen:
    """The screen of one machine: redrawn on its display when the QR token or the status line changes."""

    def __init__(self, display, machine_id: str, name: str, secret: bytes, cloud_url: str, rotate_s: float,
                 url_file: str = ""):
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
        self._title_font = ImageFont.load_default(size=self._title_size)
        self._text_font = ImageFont.load_default(size=self._text_size)

    def next_nonce(self) -> None:
        """After a sale: a fresh code at once (never the nonce the dashboard's copy of the screen uses)."""
        self.nonce = (self.nonce + 1) % qrtoken.MIRROR_NONCE

    def refresh(self, cloud_now: float, status: str) -> bool:
        """Draw the screen if the token or the status changed; return True if it drew."""
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

    def render(self, url: str, status: str) -> Image.Image:
        """The whole screen as a pillow image of the display's size."""
        width, height = self.display.size
        image = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(image)
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
        self._text(draw, (centre, title_y), self.name, self._title_size, self._title_font, column, "black")
        self._text(draw, (centre, below), "Scan to buy", self._title_size, self._title_font, column, "black")
        self._text(draw, (centre, status_y), status, self._text_size, self._text_font, column, "#444")
        return image

    def show_checks(self, checks, heading: str) -> bool:
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
        self._text(draw, (width // 2, height // 12), self.name, self._title_size, self._title_font, width * 9 // 10,
                   "black")
        self._text(draw, (width // 2, height // 12 + self._title_size * 3 // 2), heading, self._text_size,
                   self._text_font, width * 9 // 10, "#444")
        top = height // 12 + self._title_size * 3
        row = max(self._text_size * 2, (height - top) // max(1, len(checks) + 1))
        mark = min(row * 2 // 3, self._title_size)
        for i, check in enumerate(checks):
            y = top + i * row
            x = width // 20
            self._mark(draw, x, y, mark, check.ok)
            text = f"{check.name}: {check.detail}"
            font, size = self._text_font, self._text_size
            # Long reasons are drawn smaller, never cut off: the reason is what the technician needs.
            while font.getlength(text) > width - x - mark * 2 and size > 8:
                size -= 1
                font = ImageFont.load_default(size=size)
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

    @staticmethod
    def _text(draw: ImageDraw.ImageDraw, centre: tuple[int, int], text: str, size: int, font, max_width: int,
              fill: str) -> None:
        # A long machine name or status is drawn smaller rather than cut off at the screen's edge.
        while font.getlength(text) > max_width and size > 8:
            size = max(8, min(size - 1, int(size * max_width / font.getlength(text))))
            font = ImageFont.load_default(size=size)
        draw.text(centre, text, fill=fill, font=font, anchor="mm")
