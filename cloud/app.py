"""The cloud's HTTP side: one FastAPI app that mounts every domain's API routes and pages.

Nothing here handles a request itself: each domain's ``routes.py`` (the API under /api/v1) and
``pages.py`` (the dashboard under /staff, and the customer's pages) do, and they reach the running cloud
through typed dependencies on ``app.state.cloud``.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from cloud.audits import pages as audit_pages
from cloud.audits import routes as audit_routes
from cloud.alerts import pages as alert_pages
from cloud.alerts import routes as alert_routes
from cloud.catalog import pages as catalog_pages
from cloud.catalog import routes as catalog_routes
from cloud.core.db import utcnow
from cloud.finance import pages as finance_pages
from cloud.finance import routes as finance_routes
from cloud.fleet import pages as fleet_pages
from cloud.fleet import routes as fleet_routes
from cloud.payments import pages as payment_pages
from cloud.payments import routes as payment_routes
from cloud.payments.registry import REGISTRY
from cloud.people import auth
from cloud.people import pages as people_pages
from cloud.people import routes as people_routes
from cloud.people import signin as people_signin
from cloud.sales import pages as sales_pages
from cloud.sales import routes as sales_routes
from cloud.sales import shop
from cloud.stock import pages as stock_pages
from cloud.stock import routes as stock_routes
from cloud.stock import tech as stock_tech
from cloud.sync import routes as sync_routes
from cloud.web import bodies, limits, pages

log = logging.getLogger(__name__)

# In the order they are matched; the customer's shop last, since it has the site's root.
ROUTERS = [
    people_routes.router, people_routes.pages, fleet_routes.router, alert_routes.router, stock_tech.api, stock_routes.router,
    finance_routes.router, sales_routes.router, audit_routes.router, sync_routes.router, catalog_routes.router,
    pages.router, catalog_pages.router, fleet_pages.router, alert_pages.router, audit_pages.router, sales_pages.router,
    stock_pages.router, stock_tech.router, finance_pages.router, people_pages.router,
    people_signin.router,
    shop.router, payment_pages.router,
]


def create_app(cloud, admin_token: str, cookie_secret: bytes) -> FastAPI:
    """The app for a running ``cloud.service.Cloud``: staff sign-in, the built-in administrator that
    ``admin_token`` (<var>/admin-token) acts as, every domain's routes and pages."""
    app = FastAPI(title="Vending fleet cloud", version="1", docs_url="/api/docs", openapi_url="/api/v1/openapi.json")
    app.mount("/static", StaticFiles(directory=os.path.join(pages.HERE, "static")), name="static")
    app.state.cloud = cloud
    app.state.people = auth.Gate(cloud.engine, cookie_secret, cloud.settings.public_url)
    app.state.limiter = limits.Limiter.from_settings(cloud.settings)  # per process: see cloud/web/limits.py
    app.add_middleware(bodies.RefuseLoneSurrogates)
    app.add_middleware(pages.SecurityHeaders, exempt=(app.docs_url, "/api/redoc"), https=app.state.people.secure)
    if admin_token:
        bootstrap(cloud.engine, admin_token)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(payment_routes.router)
    for spec in REGISTRY:  # each payment provider's own pages (its return pages...), if it has any
        if spec.router:
            app.include_router(importlib.import_module(spec.router).router)
    for exc, handler in people_pages.HANDLERS.items():
        app.add_exception_handler(exc, handler)
    app.add_exception_handler(limits.RateLimited, limits.too_many)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(OverflowError, number_too_large)
    app.add_exception_handler(sa.exc.DataError, number_too_large)  # PostgreSQL: a number past its column
    return app


def settle() -> None:
    """Before the first request of a long-running process: compile the pages' templates, then move every
    object there is so far (modules, tables, templates, catalogues: some 160,000) out of the collector's
    sight (``gc.freeze``). Without it, a full collection looked at all of them every few requests and made
    one page view in ten 60–90 ms slower."""
    pages.compile_all()
    gc.collect()
    gc.freeze()


def bootstrap(engine: sa.Engine, admin_token: str) -> None:
    """The built-in administrator behind the bootstrap token. The database must be migrated already."""
    try:
        with engine.begin() as conn:
            auth.bootstrap(conn, admin_token, utcnow())
    except sa.exc.IntegrityError:
        # Another cloud process starting at the same moment made it first; now it exists.
        with engine.begin() as conn:
            auth.bootstrap(conn, admin_token, utcnow())


def http_error(request: Request, exc: HTTPException):
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def invalid_request(request: Request, exc: RequestValidationError):
    where = lambda e: ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"  # noqa: E731
    return JSONResponse({"error": "; ".join(f"{where(e)}: {e.get('msg', 'invalid')}" for e in exc.errors())},
                        status_code=422)


def number_too_large(request: Request, exc: Exception):
    """A number past what the database holds (SQLite binds at most 64 bits, PostgreSQL's integer columns 32):
    the caller's mistake, and the failed statement rolled its transaction back, so nothing was written."""
    return JSONResponse({"error": "a number in the request is too large (ids and amounts fit in 64 bits)"},
                        status_code=422)
