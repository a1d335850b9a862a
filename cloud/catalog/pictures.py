"""Product pictures for the menu: a manager's upload kept as a file under the cloud's var folder, or a
generated placeholder (the product's initial on a colour of its own), served with an ETag so a phone on a
slow line fetches each picture once."""

from __future__ import annotations

import hashlib
import html
import os
import re

MAX_BYTES = 512 * 1024
# What the first bytes of a file say it is: nothing else is believed (not the name, not Content-Type).
MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpg"))
TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "svg": "image/svg+xml"}
SKU_RE = re.compile(r"[A-Za-z0-9_.-]{1,40}")
# A day in the phone's cache, then a cheap 304 when the ETag still matches.
CACHE = "public, max-age=86400"



def kind_of(data: bytes) -> str | None:
    """'png', 'jpg' or 'webp' from a file's magic bytes; None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, ext in MAGIC:
        if data.startswith(magic):
            return ext
    return None


def folder(var: str) -> str:
    return os.path.join(var, "media", "products")


STORED = ("png", "jpg", "webp")  # what an upload is kept as: ``{sku}.{ext}``


def candidates(var: str, sku: str) -> list[str]:
    """Every path this SKU's picture may have, by exact name: never a pattern made of the SKU, which would
    match another SKU that shares its prefix ("pic" and "pic.x")."""
    return [os.path.join(folder(var), f"{sku}.{ext}") for ext in STORED]


def stored(var: str, sku: str) -> str | None:
    """The uploaded picture's path for this SKU, or None."""
    return next((p for p in candidates(var, sku) if os.path.isfile(p)), None)


def store(var: str, sku: str, data: bytes) -> str:
    """Keep ``data`` as this SKU's picture (replacing any other type), written whole or not at all."""
    ext = kind_of(data)
    os.makedirs(folder(var), exist_ok=True)
    path = os.path.join(folder(var), f"{sku}.{ext}")
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    for old in candidates(var, sku):
        if old != path and os.path.exists(old):
            os.remove(old)
    return path


# Colours dark enough for white text (WCAG AA at this size).
PALETTE = ("#1d5fbf", "#a4262c", "#0b6a0b", "#8a3ffc", "#b4009e", "#005b70", "#7a4a00", "#4b4b9c")


def placeholder(sku: str, name: str) -> bytes:
    """A square SVG: the product's initial on a colour derived from its SKU (the same every time)."""
    colour = PALETTE[hashlib.sha256(sku.encode()).digest()[0] % len(PALETTE)]
    initial = html.escape((name.strip() or sku)[:1].upper())
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 96 96" width="96" height="96">'
            f'<rect width="96" height="96" rx="12" fill="{colour}"/>'
            f'<text x="48" y="64" font-size="48" font-family="sans-serif" text-anchor="middle" fill="#fff">'
            f'{initial}</text></svg>').encode()


def picture(var: str, sku: str, name: str) -> tuple[bytes, str]:
    """The picture's bytes and media type: the upload if there is one, else the placeholder."""
    path = stored(var, sku)
    if path is None:
        return placeholder(sku, name), TYPES["svg"]
    with open(path, "rb") as f:
        return f.read(), TYPES[path.rsplit(".", 1)[-1]]


