"""Product pictures for the menu: a manager's upload kept as a file under the cloud's var folder, or a
generated placeholder (the product's initial on a colour of its own), served with an ETag so a phone on a
slow line fetches each picture once."""

from __future__ import annotations

import glob
import hashlib
import html
import os
import re

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from protocol.messages import utcnow

from cloud import people
from cloud.fleet.machines import products
from cloud.people import require

MAX_BYTES = 512 * 1024
# What the first bytes of a file say it is: nothing else is believed (not the name, not Content-Type).
MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpg"))
TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "svg": "image/svg+xml"}
SKU_RE = re.compile(r"[A-Za-z0-9_.-]{1,40}")
# A day in the phone's cache, then a cheap 304 when the ETag still matches.
CACHE = "public, max-age=86400"

router = APIRouter()


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


def stored(var: str, sku: str) -> str | None:
    """The uploaded picture's path for this SKU, or None."""
    found = [p for p in glob.glob(os.path.join(folder(var), glob.escape(sku) + ".*"))
             if p.rsplit(".", 1)[-1] in ("png", "jpg", "webp")]
    return found[0] if found else None


def store(var: str, sku: str, data: bytes) -> str:
    """Keep ``data`` as this SKU's picture (replacing any other type), written whole or not at all."""
    ext = kind_of(data)
    os.makedirs(folder(var), exist_ok=True)
    path = os.path.join(folder(var), f"{sku}.{ext}")
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    for old in glob.glob(os.path.join(folder(var), glob.escape(sku) + ".*")):
        if old != path and not old.endswith(".part"):
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


def product_name(request: Request, sku: str) -> str | None:
    with request.app.state.cloud.engine.connect() as conn:
        return conn.execute(sa.select(products.c.name).where(products.c.sku == sku)).scalar()


@router.get("/media/products/{sku}", include_in_schema=False)
def serve(request: Request, sku: str):
    name = product_name(request, sku) if SKU_RE.fullmatch(sku) else None
    if name is None:
        return Response(status_code=404)
    data, media_type = picture(request.app.state.cloud.settings.var, sku, name)
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"Cache-Control": CACHE, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


def keep(cloud, caller: people.Caller, sku: str, data: bytes) -> None:
    store(cloud.settings.var, sku, data)
    with cloud.engine.begin() as conn:
        people.audit.record(conn, caller, "product.picture", "product", sku, {"bytes": len(data)}, utcnow())


@router.put("/api/v1/products/{sku}/picture", tags=["stock"])
async def upload(request: Request, sku: str, caller: people.Caller = Depends(require(*people.STOCK_EDITORS))):
    """The product's picture for the customers' menu: the body is the file, PNG, JPEG or WebP, 512 KB at most."""
    if not SKU_RE.fullmatch(sku) or await run_in_threadpool(product_name, request, sku) is None:
        raise HTTPException(404, f"no product {sku}")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BYTES:
            raise HTTPException(422, f"picture: at most {MAX_BYTES // 1024} KB")
    data = bytes(data)
    if not data:
        raise HTTPException(422, "picture: the request body is empty; send the file itself")
    if kind_of(data) is None:
        raise HTTPException(422, "picture: not a PNG, JPEG or WebP file (judged by its first bytes)")
    await run_in_threadpool(keep, request.app.state.cloud, caller, sku, data)
    return {"sku": sku, "bytes": len(data), "type": TYPES[kind_of(data)], "url": f"/media/products/{sku}"}
