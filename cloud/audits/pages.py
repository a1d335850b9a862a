"""Dashboard: DEX audits, newest first, and a form to upload one (imported as ``POST /api/v1/audits`` does)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

import dex
from cloud import people
from cloud.core.db import reader
from cloud.audits import AuditError, list_audits
from cloud.audits.routes import store
from cloud.people import auth
from cloud.people.auth import staff_only
from cloud.web.dashboard import add_page, dash
from cloud.web.pages import translator

router = APIRouter(include_in_schema=False)
add_page("/staff/audits", "Audits", people.FLEET_READERS, order=15)
READ = Depends(staff_only(*people.FLEET_READERS))
EDIT = Depends(staff_only(*people.FLEET_EDITORS))
KINDS = {"baseline": "First read: baseline, no sales", "delta": "Sales since the previous read",
         "reset": "Counter reset", "board_swap": "Board swapped: new baseline"}
FORM_OVERHEAD = 64 * 1024  # the multipart framing and the other fields around the file


def audits_page(request: Request, caller: auth.Caller, status_code: int = 200, error: str = "", done: dict | None = None,
                machine: str = ""):
    with reader(request.app.state.cloud.engine).connect() as conn:
        rows = list_audits(conn, machine or None, 200)
    return dash(request, caller, "dash_audits.html", status_code, audits=rows, kinds=KINDS, error=error, done=done,
                machine=machine, can_import=caller.role in people.FLEET_EDITORS, max_mb=dex.MAX_BYTES // (1024 * 1024))


@router.get("/staff/audits")
def audits_view(request: Request, machine: str = "", done: int | None = None, caller: auth.Caller = READ):
    shown = None
    if done is not None:
        with reader(request.app.state.cloud.engine).connect() as conn:
            shown = next((a for a in list_audits(conn, None, 1000) if a["id"] == done), None)
    return audits_page(request, caller, done=shown, machine=machine)


@router.post("/staff/audits")
async def audits_upload(request: Request, caller: auth.Caller = EDIT):
    """Import the uploaded file; the page says what it was (or why it was refused: nothing imported)."""
    _ = translator(request)
    size = int(request.headers.get("content-length") or 0)
    if size > dex.MAX_BYTES + FORM_OVERHEAD:  # refused before the form is read
        return audits_page(request, caller, 413, _("Not imported: the file is larger than {n} MB.",
                                                   n=dex.MAX_BYTES // (1024 * 1024)))
    form = await request.form(max_files=1, max_fields=10)
    upload = form.get("file")
    if upload is None or isinstance(upload, str) or not upload.filename:
        return audits_page(request, caller, 422, _("Choose a DEX file to upload."))
    data = await upload.read(dex.MAX_BYTES + 1)
    if len(data) > dex.MAX_BYTES:
        return audits_page(request, caller, 413, _("Not imported: the file is larger than {n} MB.",
                                                   n=dex.MAX_BYTES // (1024 * 1024)))
    machine = str(form.get("machine", "")).strip() or None
    try:
        result = await run_in_threadpool(store, request.app.state.cloud, caller, data, upload.filename[:200], machine,
                                         form.get("new_machine") == "1", str(form.get("currency", "")).strip() or None)
    except AuditError as e:
        return audits_page(request, caller, e.status, _("Not imported: {reason}", reason=str(e)))
    return RedirectResponse(f"/staff/audits?done={result['id']}", status_code=303)
