"""The catalogue's routes: a product's picture served to the menu, and uploaded by staff."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from protocol.messages import utcnow
from cloud import people
from cloud.core.db import reader
from cloud.catalog.pictures import CACHE, MAX_BYTES, SKU_RE, TYPES, kind_of, picture, store
from cloud.catalog.products import products
from cloud.people import require

router = APIRouter()


def product_name(request: Request, sku: str) -> str | None:
    with reader(request.app.state.cloud.engine).connect() as conn:
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
