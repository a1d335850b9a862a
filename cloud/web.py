"""The cloud's HTTP side: the customer's pages (plain server-rendered forms) and the API under /api/v1."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import secrets
import time
from datetime import timedelta

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from protocol import ProtocolError
from protocol import token as qrtoken
from protocol.messages import utcnow

from . import dashboard, fleet_routes, ingest, locations, machines, orders, pages, people, planogram, reports
from .money import parse_amount
from .pages import page, safe_next
from .people import Caller, require
from .payments import IdempotencyConflict, PaymentError
from .payments import routes as payment_routes
from .finance.routes import router as finance_router
from .stock.routes import router as stock_router

log = logging.getLogger(__name__)

HERE = os.path.dirname(__file__)
VISIT_COOKIE = "vend_visit"
VISIT_S = 15 * 60  # after a scan, the menu stays open this long
DEMO_CURRENCY = "CNY"
STATUS_TEXT = {
    "created": "Placing your order...",
    "authorising": "Waiting for your payment to be confirmed...",
    "authorised": "Paid. Waiting for the machine...",
    "vending": "The machine is dropping your product...",
    "succeeded": "Take your product!",
    "failed": "The product did not drop. You have not been charged.",
    "unknown": "The machine restarted during your purchase. You have not been charged.",
    "rejected": "The machine could not serve this order. You have not been charged.",
    "expired": "The machine did not answer in time. You have not been charged.",
    "declined": "Payment declined.",
    "dropped_unpaid": "Take your product! (not charged)",
}


def create_app(cloud, admin_token: str, cookie_secret: bytes) -> FastAPI:
    app = FastAPI(title="Vending fleet cloud", version="1", docs_url="/api/docs", openapi_url="/api/v1/openapi.json")
    app.mount("/static", StaticFiles(directory=os.path.join(HERE, "static")), name="static")
    signer = people.CookieSigner(cookie_secret)
    engine = cloud.engine
    settings = cloud.settings
    # Staff sign-in, the role check on every /api/v1 route, and the built-in administrator that
    # admin_token (<var>/admin-token) acts as.
    people.install(app, engine, cookie_secret, admin_token, settings.public_url)
    app.state.cloud = cloud
    app.include_router(fleet_routes.router)
    app.include_router(stock_router)
    app.include_router(finance_router)
    app.include_router(reports.router)
    app.include_router(pages.router)
    dashboard.install(app)
    payment_routes.install(app, cloud)

    def problem(request: Request, status_code: int, title: str, message: str, action: tuple | None = None):
        return page(request, "problem.html", status_code, title=title, message=message, action=action)

    def current_customer(request: Request):
        value = signer.unsign(request.cookies.get(people.COOKIE))
        if value is None or not value.isdigit():
            return None
        with engine.connect() as conn:
            return people.get(conn, int(value))

    def visiting(request: Request, machine_id: str) -> bool:
        value = signer.unsign(request.cookies.get(VISIT_COOKIE))
        if not value:
            return False
        visited, _, until = value.partition("|")
        return visited == machine_id and until.isdigit() and int(until) > time.time()

    def wallet_page(request: Request, customer, next: str, error: str = "", status_code: int = 200):
        with engine.connect() as conn:
            balance = cloud.provider.balance(conn, customer.id, DEMO_CURRENCY)
            history = cloud.provider.history(conn, customer.id, DEMO_CURRENCY)
        return page(request, "wallet.html", status_code, customer=customer, balance=balance, history=history,
                    currency=DEMO_CURRENCY, key=secrets.token_urlsafe(16), next=safe_next(next) if next else "",
                    error=error)

    # -- customer pages -----------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request):
        _ = pages.translator(request)
        return problem(request, 200, _("Scan a machine"), _("Scan the QR code on a vending machine's screen to buy."))

    @app.get("/q/{tok}", response_class=HTMLResponse)
    def landing(request: Request, tok: str):
        try:
            machine_id = qrtoken.machine_of(tok)
            with engine.connect() as conn:
                secrets_now = machines.secrets_of(conn, machine_id, utcnow())
            if not secrets_now:
                raise ProtocolError("this QR code names a machine we do not know")
            qrtoken.verify(tok, secrets_now, time.time(), settings.token_ttl_s, settings.token_skew_s)
        except qrtoken.TokenExpired as e:
            return problem(request, 410, "This QR code has expired", f"{e}. The code on the screen changes every "
                           "few seconds: scan the one showing now.")
        except ProtocolError as e:
            cloud.stats.counts["bad_tokens"] += 1
            return problem(request, 400, "QR code not recognised", f"{e}. Scan the code on the machine's screen.")
        target = f"/m/{machine_id}"
        if current_customer(request) is None:
            target = f"/register?next={target}"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(VISIT_COOKIE, signer.sign(f"{machine_id}|{int(time.time()) + VISIT_S}"),
                            max_age=VISIT_S, httponly=True, samesite="lax")
        return response

    @app.get("/register", response_class=HTMLResponse)
    def register_form(request: Request, next: str = "/"):
        return page(request, "register.html", next=safe_next(next), errors={}, values={},
                    methods=cloud.provider.methods)

    @app.post("/register", response_class=HTMLResponse)
    def register(request: Request, name: str = Form(""), phone: str = Form(""),
                 payment_method: str = Form("wallet"), next: str = Form("/")):
        try:
            if payment_method not in cloud.provider.methods:
                raise people.RegistrationError("payment_method", "Choose a payment method: "
                                               + ", ".join(cloud.provider.methods) + ".")
            with engine.begin() as conn:
                customer_id = people.register(conn, name, phone, payment_method, utcnow())
        except people.RegistrationError as e:
            cloud.stats.counts["bad_registrations"] += 1
            return page(request, "register.html", 422, next=safe_next(next), errors={e.field: str(e)},
                        values={"name": name, "phone": phone}, methods=cloud.provider.methods)
        response = RedirectResponse(safe_next(next), status_code=303)
        response.set_cookie(people.COOKIE, signer.sign(str(customer_id)), max_age=3 * 365 * 86400,
                            httponly=True, samesite="lax")
        return response

    @app.get("/m/{machine_id}", response_class=HTMLResponse)
    def menu(request: Request, machine_id: str):
        customer = current_customer(request)
        if customer is None:
            return RedirectResponse(f"/register?next=/m/{machine_id}", status_code=303)
        if not visiting(request, machine_id):
            return problem(request, 403, "Scan the machine first",
                           "To buy, scan the QR code on the machine's screen: it proves you are standing at it.")
        with engine.connect() as conn:
            try:
                machine = machines.get(conn, machine_id)
            except machines.FleetError:
                return problem(request, 404, "Unknown machine", f"There is no machine {machine_id}.")
            items = machines.menu(conn, machine_id)
            balance = cloud.provider.balance(conn, customer.id, DEMO_CURRENCY)
        return page(request, "menu.html", machine=machine, items=items, customer=customer, balance=balance,
                    currency=DEMO_CURRENCY, key=secrets.token_urlsafe(16))

    @app.post("/m/{machine_id}/buy", response_class=HTMLResponse)
    def buy(request: Request, machine_id: str, slot: str = Form(""), key: str = Form("")):
        customer = current_customer(request)
        if customer is None:
            return RedirectResponse(f"/register?next=/m/{machine_id}", status_code=303)
        if not visiting(request, machine_id):
            return problem(request, 403, "Scan the machine first", "Scan the QR code on the machine's screen.")
        if not valid_form_key(key):
            return problem(request, 400, "Please try again", "The order form was incomplete: reload the menu.",
                           ("Back to the menu", f"/m/{machine_id}"))
        try:
            with engine.begin() as conn:
                order, created = orders.place(conn, cloud.provider, customer.id, machine_id, slot, key, utcnow(),
                                              settings.vend_timeout_s)
        except orders.OrderError as e:
            return problem(request, 409, {"sold_out": "Sold out", "offline": "Machine offline",
                                          "out_of_service": "Out of service"}.get(e.code, "Cannot buy this"),
                           str(e), ("Back to the menu", f"/m/{machine_id}"))
        except machines.FleetError as e:
            return problem(request, 404, "Unknown machine", str(e))
        if order.status == "declined" and order.provider == "wallet":
            return problem(request, 402, "Payment declined", f"{order.reason}. Top up your wallet and try again.",
                           ("Top up", f"/wallet?next=/m/{machine_id}"))
        if order.status == "declined":
            return problem(request, 402, "Payment declined", f"{order.reason}.",
                           ("Back to the menu", f"/m/{machine_id}"))
        if created and order.status == "authorised":
            cloud.send_vend(order)
        elif created and order.status == orders.WAITING:
            cloud.provider.kick()
        return RedirectResponse(f"/orders/{order.id}", status_code=303)

    @app.get("/orders/{order_id}", response_class=HTMLResponse)
    def order_page(request: Request, order_id: str):
        customer = current_customer(request)
        with engine.connect() as conn:
            order = orders.get(conn, order_id)
            if order is None or customer is None or order.customer_id != customer.id:
                return problem(request, 404, "No such order", "This order does not exist or is not yours.")
            item = machines.slot_for_sale(conn, order.machine_id, order.slot)
            balance = cloud.provider.balance(conn, customer.id, order.currency)
            refunded = cloud.provider.refunded(conn, order)[1] if order.status in orders.REFUNDABLE else 0
        return page(request, "order.html", order=order, item=item, text=STATUS_TEXT.get(order.status, order.status),
                    settled=order.status in orders.SETTLED, balance=balance, refunded=refunded)

    @app.get("/wallet", response_class=HTMLResponse)
    def wallet(request: Request, next: str = ""):
        customer = current_customer(request)
        if customer is None:
            return RedirectResponse("/register?next=/wallet", status_code=303)
        return wallet_page(request, customer, next)

    @app.post("/wallet/topup", response_class=HTMLResponse)
    def topup(request: Request, amount: str = Form(""), key: str = Form(""), next: str = Form("")):
        customer = current_customer(request)
        if customer is None:
            return RedirectResponse("/register?next=/wallet", status_code=303)
        try:
            if not valid_form_key(key):
                raise PaymentError("The form was incomplete: reload the page.")
            minor = parse_amount(amount, DEMO_CURRENCY)
            with engine.begin() as conn:
                cloud.provider.topup(conn, customer.id, minor, DEMO_CURRENCY, f"{customer.id}:{key}", utcnow())
        except IdempotencyConflict:
            # An old form (the back button) sent again with another amount: its top-up was done already.
            return wallet_page(request, customer, next, error="That top-up was done already, for another amount. "
                               "Nothing more was added: check the balance, then top up again here.", status_code=409)
        except (PaymentError, ValueError) as e:
            return wallet_page(request, customer, next, error=str(e), status_code=422)
        return RedirectResponse(safe_next(next) if next else "/wallet", status_code=303)

    # -- API ----------------------------------------------------------------------------------------

    @app.get("/api/v1/health")
    def health():
        return {"ok": True, "broker_connected": cloud.bus.connected.is_set(), "counts": dict(cloud.stats.counts)}

    @app.get("/api/v1/orders/{order_id}")
    def order_json(request: Request, order_id: str):
        customer = current_customer(request)
        with engine.connect() as conn:
            order = orders.get(conn, order_id)
        if order is None or customer is None or order.customer_id != customer.id:
            raise HTTPException(404, "no such order")
        return {"id": order.id, "status": order.status, "settled": order.status in orders.SETTLED,
                "text": STATUS_TEXT.get(order.status, order.status), "amount": order.amount,
                "currency": order.currency}

    @app.get("/api/v1/machines", dependencies=[Depends(require(*people.FLEET_READERS))])
    def api_machines():
        with engine.connect() as conn:
            rows = machines.list_machines(conn)
            configs = planogram.statuses(conn)
            sites = locations.by_machine(conn)
        none = planogram.status_of_none()
        return [{"id": m.id, "name": m.name, "location": m.location, "online": m.online,
                 "last_seen": m.last_seen.isoformat() if m.last_seen else None, "firmware": m.firmware,
                 "machine_head": m.machine_head, "cloud_head": m.cloud_head,
                 "location_id": sites.get(m.id, {}).get("id"), "location_name": sites.get(m.id, {}).get("name"),
                 "planogram": configs.get(m.id, none)} for m in rows]

    def broker_note() -> str | None:
        """Rewrite the broker's users after a change; what happened, for the caller to see."""
        try:
            return cloud.refresh_broker()
        except OSError as e:
            log.error("could not rewrite the broker's files: %s", e)
            return f"broker files NOT rewritten: {e}"

    def fleet_error(e: machines.FleetError) -> HTTPException:
        return HTTPException(404 if isinstance(e, machines.NoSuchMachine) else 422, str(e))

    @app.post("/api/v1/machines", status_code=201)
    def api_add_machine(body: dict, caller: Caller = Depends(require(*people.FLEET_EDITORS))):
        try:
            with engine.begin() as conn:
                now = utcnow()
                secret = machines.add_machine(conn, body.get("id", ""), body.get("name", ""),
                                              body.get("location", ""), now, body.get("secret"))
                creds = machines.credentials(conn, body["id"], now)
                people.audit.record(conn, caller, "machine.add", "machine", body["id"],
                                    {"name": body.get("name", ""), "location": body.get("location", "")}, now)
        except machines.FleetError as e:
            raise fleet_error(e) from None
        return {"id": body["id"], "secret": secret, "mqtt_username": creds.mqtt_username,
                "mqtt_password": creds.mqtt_password, "broker": broker_note()}

    @app.post("/api/v1/machines/{machine_id}/rotate-secret")
    def api_rotate_secret(machine_id: str, body: dict, caller: Caller = Depends(require(*people.SECRET_ADMINS))):
        overlap = body.get("overlap_s", 24 * 3600)
        longest = machines.MAX_OVERLAP.total_seconds()
        if not isinstance(overlap, (int, float)) or isinstance(overlap, bool) or not 0 <= overlap <= longest:
            raise HTTPException(422, f"overlap_s must be a number of seconds from 0 to {longest:.0f}")
        try:
            with engine.begin() as conn:
                now = utcnow()
                creds = machines.rotate(conn, machine_id, now, timedelta(seconds=overlap))
                people.audit.record(conn, caller, "machine.rotate_secret", "machine", machine_id,
                                    {"overlap_s": overlap}, now)
        except machines.FleetError as e:
            raise fleet_error(e) from None
        log.info("machine %s: secret rotated (previous valid until %s)", machine_id, creds.previous_until)
        cloud.tell_credentials_changed(machine_id)
        return {**creds.public(), "secret": creds.secret, "mqtt_password": creds.mqtt_password,
                "broker": broker_note()}

    @app.get("/api/v1/machine/credentials")
    def api_machine_fetches_credentials(request: Request):
        """A machine, signing with its secret (the previous one too, during a rotation's overlap), takes up
        its current QR secret and broker login, so a rotation never stops it selling."""
        header = request.headers.get("authorization", "")
        try:
            with engine.connect() as conn:
                now = utcnow()
                machine_id = qrtoken.request_machine(header)
                qrtoken.verify_request(header, machines.secrets_of(conn, machine_id, now), now.timestamp(),
                                       "credentials")
                creds = machines.credentials(conn, machine_id, now)
        except (ProtocolError, machines.FleetError) as e:
            # The same answer for an unknown machine and a bad signature: nothing to learn by asking.
            log.warning("refused a machine's credentials request: %s", e)
            raise HTTPException(401, "not a machine of this cloud, or a bad or stale signature",
                                headers={"WWW-Authenticate": "VendMachine"}) from None
        log.info("machine %s fetched its credentials", machine_id)
        return {"id": machine_id, "secret": creds.secret, "mqtt_username": creds.mqtt_username,
                "mqtt_password": creds.mqtt_password}

    @app.get("/api/v1/machines/{machine_id}/credentials")
    def api_credentials(machine_id: str, caller: Caller = Depends(require(*people.PROVISIONERS))):
        """What an SD card needs: the QR secret, the cloud's address, and how to reach the broker."""
        try:
            with engine.begin() as conn:
                now = utcnow()
                creds = machines.credentials(conn, machine_id, now)
                name = machines.get(conn, machine_id).name
                # Reading a machine's secrets is worth a trace: who wrote which card, when.
                people.audit.record(conn, caller, "machine.credentials_read", "machine", machine_id, {}, now)
        except machines.FleetError as e:
            raise fleet_error(e) from None
        files = cloud.broker_files
        mqtt = {"host": settings.machine_broker, "username": "", "password": "", "tls": False, "ca_pem": "",
                "port": settings.broker_address[1], "certificate_port": None}
        if files is not None:
            mqtt.update(username=creds.mqtt_username, password=creds.mqtt_password, tls=True,
                        ca_pem=cloud.ca.ensure().cert_pem, port=files.ports.password,
                        certificate_port=files.ports.certificate)
        return {"id": machine_id, "name": name, "secret": creds.secret, "cloud_url": settings.public_url,
                "mqtt": mqtt}

    @app.post("/api/v1/machines/{machine_id}/certificate")
    def api_certificate(machine_id: str, caller: Caller = Depends(require(*people.PROVISIONERS))):
        """A new client certificate and key for a machine, signed by the fleet CA (the key is not kept)."""
        try:
            with engine.begin() as conn:
                machines.get(conn, machine_id)
                if cloud.ca is None:
                    raise HTTPException(409, "this cloud keeps no CA: start it with --broker-files")
                cert, key = cloud.ca.ensure().issue_client(machine_id)
                people.audit.record(conn, caller, "machine.certificate", "machine", machine_id, {}, utcnow())
        except machines.FleetError as e:
            raise fleet_error(e) from None
        log.info("machine %s: client certificate issued", machine_id)
        return {"id": machine_id, "cert_pem": cert, "key_pem": key, "ca_pem": cloud.ca.cert_pem,
                "port": cloud.broker_files.ports.certificate if cloud.broker_files else None}

    @app.put("/api/v1/machines/{machine_id}/slots")
    def api_set_slots(machine_id: str, body: list[dict], caller: Caller = Depends(require(*people.FLEET_EDITORS))):
        """Change some slots: a new planogram version with these slots changed, sent to the machine."""
        try:
            specs = [machines.SlotSpec.from_obj(item) for item in body]
            with engine.begin() as conn:
                now = utcnow()
                version = machines.set_slots(conn, machine_id, specs, now, caller.user_id)
                people.audit.record(conn, caller, "machine.slots", "machine", machine_id,
                                    {"slots": [dataclasses.asdict(s) for s in specs], "version": version}, now)
        except machines.FleetError as e:
            raise HTTPException(422, str(e)) from None
        return {"machine": machine_id, "slots": len(specs), "version": version,
                "published": cloud.publish_config(machine_id)}

    @app.get("/api/v1/machines/{machine_id}/slots", dependencies=[Depends(require(*people.FLEET_READERS))])
    def api_slots(machine_id: str):
        with engine.connect() as conn:
            return [{"slot": r.slot, "sku": r.sku, "name": r.name, "price": r.price, "currency": r.currency,
                     "count": r.count, "capacity": r.capacity, "par_level": r.par_level, "cabinet": r.cabinet,
                     "flagged": r.flagged}
                    for r in machines.menu(conn, machine_id)]

    @app.get("/api/v1/sales", dependencies=[Depends(require(*people.SALES_READERS))])
    def api_sales(machine: str | None = None, limit: int = 100):
        if not 1 <= limit <= 10000:
            raise HTTPException(422, "limit must be 1-10000")
        s = ingest.sales
        q = sa.select(s).order_by(s.c.ts.desc(), s.c.seq.desc()).limit(limit)
        totals = sa.select(s.c.currency, sa.func.count(), sa.func.sum(s.c.amount)).group_by(s.c.currency)
        if machine:
            q, totals = q.where(s.c.machine_id == machine), totals.where(s.c.machine_id == machine)
        with engine.connect() as conn:
            rows = conn.execute(q).all()
            sums = conn.execute(totals).all()
        return {"sales": [{"machine_id": r.machine_id, "seq": r.seq, "ts": r.ts, "order_id": r.order_id,
                           "slot": r.slot, "amount": r.amount, "currency": r.currency} for r in rows],
                "totals": [{"currency": c, "count": n, "amount": int(a)} for c, n, a in sums]}

    @app.get("/api/v1/ingest", dependencies=[Depends(require(*people.FLEET_READERS))])
    def api_ingest():
        return {"counts": dict(cloud.stats.counts), "last_rejections": cloud.stats.last_rejections}

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, exc: RequestValidationError):
        where = lambda e: ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"  # noqa: E731
        return JSONResponse({"error": "; ".join(f"{where(e)}: {e.get('msg', 'invalid')}" for e in exc.errors())},
                            status_code=422)

    return app


def valid_form_key(key: str) -> bool:
    """The idempotency key a form carries: what makes a double tap one order or one top-up."""
    return bool(re.fullmatch(r"[A-Za-z0-9_-]{8,64}", key or ""))

