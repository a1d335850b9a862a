"""The ingest's own API: is the cloud up and connected, and what it stored and refused."""

from __future__ import annotations

import threading
from typing import Protocol

from fastapi import APIRouter, Depends, Request

from cloud import people
from cloud.people import require
from cloud.sync.ingest import Stats

router = APIRouter(prefix="/api/v1", tags=["ingest"])


class Link(Protocol):
    connected: threading.Event


class Running(Protocol):
    """What these routes read of the running cloud (``cloud.service.Cloud`` is one)."""

    bus: Link
    stats: Stats


def the_cloud(request: Request) -> Running:
    return request.app.state.cloud


@router.get("/health")
def health(cloud: Running = Depends(the_cloud)):
    return {"ok": True, "broker_connected": cloud.bus.connected.is_set(), "counts": dict(cloud.stats.counts)}


@router.get("/ingest", dependencies=[Depends(require(*people.FLEET_READERS))])
def api_ingest(cloud: Running = Depends(the_cloud)):
    return {"counts": dict(cloud.stats.counts), "last_rejections": cloud.stats.last_rejections}

