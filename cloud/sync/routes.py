"""The ingest's own API: is the cloud up and connected, and what it stored and refused."""

from __future__ import annotations

import queue
import threading
from typing import Protocol

from fastapi import APIRouter, Depends, Request

from cloud import people
from cloud.core.settings import Settings
from cloud.people import require
from cloud.sync.ingest import Stats

router = APIRouter(prefix="/api/v1", tags=["ingest"])


class Link(Protocol):
    connected: threading.Event
    busy_notices: int

    def behind_s(self) -> float: ...


class Running(Protocol):
    """What these routes read of the running cloud (``cloud.service.Cloud`` is one)."""

    bus: Link
    stats: Stats
    inbox: queue.Queue
    settings: Settings


def the_cloud(request: Request) -> Running:
    return request.app.state.cloud


@router.get("/health")
def health(cloud: Running = Depends(the_cloud)):
    return {"ok": True, "broker_connected": cloud.bus.connected.is_set(), "ingest": cloud.settings.ingest,
            "counts": dict(cloud.stats.counts)}


@router.get("/ingest", dependencies=[Depends(require(*people.FLEET_READERS))])
def api_ingest(cloud: Running = Depends(the_cloud)):
    # queued: messages received and not yet stored; behind_s: how far behind the ingest is (the larger of the
    # queue's work and the age of the freshest batch it last stored); busy_notices: machines told so.
    return {"counts": dict(cloud.stats.counts), "last_rejections": cloud.stats.last_rejections,
            "queued": cloud.inbox.qsize(), "behind_s": round(cloud.bus.behind_s(), 3),
            "busy_notices": cloud.bus.busy_notices}

