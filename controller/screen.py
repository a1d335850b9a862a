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
        width = display.size[0]
        self._title_font = ImageFont.load_default(size=max(16, width // 14))
        self._text_font = ImageFont.load_default(size=max(12, width // 24))

    def next_nonce(self) -> None:
        """After a sale: a fresh code at once."""
        self.nonce += 1

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
        width, height = self.display.size
        image = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(image)
        draw.text((width // 2, height // 12), self.name, fill="black", font=self._title_font, anchor="mm")
        qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2)
        qr.add_data(url)
        qr.make(fit=True)
        # A whole number of pixels per module: scaling a code by a fraction makes uneven modules that
        # phone cameras misread.
        qr.box_size = max(1, (min(width, height) * 5 // 6) // (qr.modules_count + 2 * qr.border))
        code = qr.make_image(fill_color="black", back_color="white").get_image().convert("RGB")
        side = code.size[0]
        top = height // 6
        image.paste(code, ((width - side) // 2, top))
        below = top + side + (height - top - side) // 3
        draw.text((width // 2, below), "Scan to buy", fill="black", font=self._title_font, anchor="mm")
        draw.text((width // 2, below + height // 12), status, fill="#444", font=self._text_font, anchor="mm")
        return image
