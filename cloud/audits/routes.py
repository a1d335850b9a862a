"""The audits API: ``POST /api/v1/audits`` takes one DEX file as the request body; ``GET`` lists audits."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

import dex
from cloud import people
from cloud.audits import AuditError, import_audit, list_audits
from cloud.core.db import reader, utcnow
from cloud.people import require

router = APIRouter(prefix="/api/v1", tags=["audits"])


def store(cloud, caller: people.Caller, data: bytes, filename: str, machine: str | None, new_machine: bool,
          currency: str | None) -> dict:
    """Import in one transaction with its audit-trail row; an AuditError rolls all of it back."""
    try:
        return _store(cloud, caller, data, filename, machine, new_machine, currency)
    except sa.exc.IntegrityError:
        # The same file (or a new machine of the same id) imported by another request at the same moment:
        # that one won, and this second try finds its audit.
        return _store(cloud, caller, data, filename, machine, new_machine, currency)


def _store(cloud, caller, data, filename, machine, new_machine, currency) -> dict:
    now = utcnow()
    with cloud.engine.begin() as conn:
        result = import_audit(conn, data, filename, now, machine_id=machine, new_machine=new_machine,
                              currency=currency)
        if result.created:
            people.audit.record(conn, caller, "audit.import", "machine", result.audit["machine_id"],
                                {"audit": result.audit["id"], "file": filename, "kind": result.audit["kind"],
                                 "sold": result.audit["sold_count"]}, now)
    return {**result.audit, "created": result.created}


@router.post("/audits")
async def upload(request: Request, filename: str = "upload.dex", machine: str | None = None,
                 new_machine: bool = False, currency: str | None = None,
                 caller: people.Caller = Depends(require(*people.FLEET_EDITORS))):
    """Import one DEX audit, sent as the request body (the file itself). ``machine`` names the machine (else
    the file's ID101 serial finds it); ``new_machine`` adds a machine known only from its audits. The same
    file again changes nothing (``created: false``)."""
    size = int(request.headers.get("content-length") or 0)
    if size > dex.MAX_BYTES:  # refused before a byte of it is read
        raise HTTPException(413, f"{size:,} bytes is too big for a DEX audit (at most {dex.MAX_BYTES:,})")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > dex.MAX_BYTES:
            raise HTTPException(413, f"too big for a DEX audit (at most {dex.MAX_BYTES:,} bytes)")
    if not data:
        raise HTTPException(422, "the request body is empty; send the DEX file itself")
    try:
        return await run_in_threadpool(store, request.app.state.cloud, caller, bytes(data), filename[:200], machine,
                                       new_machine, currency)
    except AuditError as e:
        raise HTTPException(e.status, f"{e.code}: {e}") from None


@router.get("/audits", dependencies=[Depends(require(*people.FLEET_READERS))])
def audits(request: Request, machine: str | None = None, limit: int = 100):
    """Audits newest first, of one machine or all: what each read was (baseline, delta, reset, board swap)
    and the sales it made."""
    if not 1 <= limit <= 1000:
        raise HTTPException(422, "limit must be 1-1000")
    with reader(request.app.state.cloud.engine).connect() as conn:
        return list_audits(conn, machine, limit)
