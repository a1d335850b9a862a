"""``vend-cloud``: the cloud service (web pages, API, ingest; and the embedded broker for the demo)."""

from __future__ import annotations

import logging
import os
import secrets
import sys

import uvicorn

from cloud.app import create_app, settle
from cloud.core import settings as settings_mod
from cloud.service import Cloud
from cloud.core.settings import read_or_create


def main(argv: list[str] | None = None) -> int:
    settings = settings_mod.parse(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the sandbox worker logs its requests its own way
    os.makedirs(settings.var, exist_ok=True)
    admin_token = os.environ.get("VEND_ADMIN_TOKEN") or read_or_create(
        os.path.join(settings.var, "admin-token"), lambda: secrets.token_urlsafe(32))
    cookie_secret = read_or_create(os.path.join(settings.var, "cookie-secret"), lambda: secrets.token_hex(32))

    # The ingest thread gives the GIL up for every database call of a group and must take it back each time;
    # while another thread runs Python (a page, an order, paho's loop), taking it back could wait the whole
    # switch interval, 5 ms by default, dozens of times a group (docs/scaling.md).
    sys.setswitchinterval(0.0005)
    cloud = Cloud(settings)
    cloud.start()
    try:
        app = create_app(cloud, admin_token, bytes.fromhex(cookie_secret))
        settle()
        host, port = settings.http_address
        logging.getLogger("cloud").info("serving on http://%s:%d (public URL %s)", host, port, settings.public_url)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        cloud.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
