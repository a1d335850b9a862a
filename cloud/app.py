"""The cloud's HTTP side: the customer's pages (plain server-rendered forms) and the API under /api/v1."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import secrets
import time
from datetime import timedelta

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from protocol import ProtocolError
from protocol import token as qrtoken
from protocol.messages import utcnow

from cloud.web import dashboard, i18n, pages
from cloud.fleet import routes as fleet_routes, locations, machines, planogram
from cloud.sync import ingest
from cloud.catalog import pictures as media
from cloud.sales import orders, receipts, reports
from cloud import people
from cloud.core.money import parse_amount
from cloud.web.pages import page, safe_next
from cloud.people import Caller, require
from cloud.payments import IdempotencyConflict, PaymentError
from cloud.payments.wallet import MAX_TOPUP
from cloud.payments import routes as payment_routes
from cloud.finance.routes import router as finance_router
from cloud.stock.routes import router as stock_router

log = logging.getLogger(__name__)

HERE = os.path.dirname(__file__)
VISIT_COOKIE = "vend_visit"
VISIT_S = 15 * 60  # after a scan, the menu stays open this long
DEMO_CURRENCY = "CNY"
EVENTS_POLL_S = 0.5
EVENTS_LONGEST_S = 90  # then the stream ends and the browser reconnects: no connection held for ever


def status_text(_, status: str) -> str:
    """What the order page says in each state: what the machine is doing, and whether money moved."""
    return {
        "created": _("Placing your order..."),
        "authorising": _("Waiting for your payment to be confirmed..."),
        "authorised": _("Paid. Waiting for the machine..."),
        "vending": _("The machine is dropping your product..."),
        "succeeded": _("Take your product!"),
        "failed": _("The product did not drop. You have not been charged."),
        "unknown": _("The machine restarted during your purchase. You have not been charged."),
        "rejected": _("The machine could not serve this order. You have not been charged."),
        "expired": _("The machine did not answer in time. You have not been charged."),
        "declined": _("Payment declined. You have not been charged."),
        "dropped_unpaid": _("Take your product! (not charged)"),
    }.get(status, status)


def create_app(cloud, admin_token: str, cookie_secret: bytes) -> FastAPI:
    app = FastAPI(title="Vending fleet cloud", version="1", docs_url="/api/docs", openapi_url="/api/v1/openapi.json")
    app.mount("/static", StaticFiles(directory=os.path.join(pages.HERE, "static")), name="static")
    app.add_middleware(pages.SecurityHeaders, exempt=(app.docs_url, "/api/redoc"))
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
    app.include_router(media.router)
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

    def not_scanned(request: Request):
        _ = pages.translator(request)
        return problem(request, 403, _("Scan the machine first"),
                       _("To buy, scan the QR code on the machine's screen with this phone: it shows you are standing "
                         "at the machine. The menu then stays open for 15 minutes."))

    def unknown_machine(request: Request, machine_id: str):
        _ = pages.translator(request)
        return problem(request, 404, _("Unknown machine"),
                       _("There is no machine {machine}. Scan the QR code on the machine's screen again.",
                         machine=machine_id))

    def wallet_page(request: Request, customer, next: str, error: str = "", status_code: int = 200,
                    amount: str = "20"):
        with engine.connect() as conn:
            balance = cloud.provider.balance(conn, customer.id, DEMO_CURRENCY)
            history = cloud.provider.history(conn, customer.id, DEMO_CURRENCY)
            bought = receipts.products_of(conn, [row.order_id for row in history if row.order_id])
        return page(request, "wallet.html", status_code, customer=customer, balance=balance, history=history,
                    bought=bought, currency=DEMO_CURRENCY, key=secrets.token_urlsafe(16),
                    next=safe_next(next) if next else "", error=error, amount=amount)

    # -- customer pages -----------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request):
        _ = pages.translator(request)
        return problem(request, 200, _("Scan a machine"), _("Scan the QR code on a vending machine's screen to buy."))

    @app.get("/q/{tok}", response_class=HTMLResponse)
    def landing(request: Request, tok: str):
        _ = pages.translator(request)
        try:
            machine_id = qrtoken.machine_of(tok)
            with engine.connect() as conn:
                secrets_now = machines.secrets_of(conn, machine_id, utcnow())
            if not secrets_now:
                raise ProtocolError("this QR code names a machine we do not know")
            scanned = qrtoken.verify(tok, secrets_now, time.time(), settings.token_ttl_s, settings.token_skew_s)
        except qrtoken.TokenExpired as e:
            log.info("expired QR code: %s", e)
            return problem(request, 410, _("This QR code has expired"),
                           _("The code on the machine's screen changes every few seconds, and this one is old "
                             "(perhaps a photo, or a page opened again later). Scan the code showing now."))
        except ProtocolError as e:
            log.info("QR code refused: %s", e)
            cloud.stats.counts["bad_tokens"] += 1
            return problem(request, 400, _("QR code not recognised"),
                           _("This code does not come from one of our machines, or it was misread. Scan the code on "
                             "the machine's screen again."))
        if scanned.nonce == qrtoken.MIRROR_NONCE:
            return problem(request, 403, _("This is a copy of the machine's screen"),
                           _("This code comes from the dashboard's copy of the screen, not from the machine. To buy, "
                             "scan the code on the machine's own screen."))
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

    def registration_message(_, e: people.RegistrationError) -> str:
        """The service's complaint in the reader's language, by the field it names."""
        if e.field == "name":
            return _("Please give a name of 1 to 80 characters, without control characters.")
        if e.field == "phone" and "already registered" in str(e):
            return _("This phone number is already registered. Use the phone you registered with.")
        if e.field == "phone":
            return _("Please give a phone number of 6 to 15 digits, optionally starting with +.")
        return _("Choose a payment method: {methods}.", methods=", ".join(cloud.provider.methods))

    @app.post("/register", response_class=HTMLResponse)
    def register(request: Request, name: str = Form(""), phone: str = Form(""),
                 payment_method: str = Form("wallet"), next: str = Form("/")):
        _ = pages.translator(request)
        try:
            if payment_method not in cloud.provider.methods:
                raise people.RegistrationError("payment_method", "no such payment method")
            with engine.begin() as conn:
                customer_id = people.register(conn, name, phone, payment_method, utcnow())
        except people.RegistrationError as e:
            cloud.stats.counts["bad_registrations"] += 1
            return page(request, "register.html", 422, next=safe_next(next),
                        errors={e.field: registration_message(_, e)},
                        values={"name": name, "phone": phone, "payment_method": payment_method},
                        methods=cloud.provider.methods)
        response = RedirectResponse(safe_next(next), status_code=303)
        response.set_cookie(people.COOKIE, signer.sign(str(customer_id)), max_age=3 * 365 * 86400,
                            httponly=True, samesite="lax")
        return response

    @app.get("/m/{machine_id}", response_class=HTMLResponse)
    def menu(request: Request, machine_id: str):
        customer = current_customer(request)
        if customer is None:
            return RedirectResponse(f"/register?next=/m/{machine_id}", status_code=303)
        with engine.connect() as conn:
            try:
                machine = machines.get(conn, machine_id)
            except machines.FleetError:
                return unknown_machine(request, machine_id)
            if not visiting(request, machine_id):
                return not_scanned(request)
            items = machines.menu(conn, machine_id)
            balance = cloud.provider.balance(conn, customer.id, DEMO_CURRENCY)
        return page(request, "menu.html", machine=machine, items=items, customer=customer, balance=balance,
                    currency=DEMO_CURRENCY, key=secrets.token_urlsafe(16))

    def cannot_buy(request: Request, e: orders.OrderError, machine_id: str, slot: str):
        """Why this order could not be placed, and what to do instead."""
        _ = pages.translator(request)
        with engine.connect() as conn:
            machine = machines.get(conn, machine_id)
            item = machines.slot_for_sale(conn, machine_id, slot)
        product = item.name if item else slot
        title, message = {
            "sold_out": (_("Sold out"), _("{product} (slot {slot}) is sold out. Choose something else from the menu. "
                                          "You have not been charged.", product=product, slot=slot)),
            "offline": (_("Machine offline"), _("{machine} is offline right now, so it cannot sell. You have not been "
                                                "charged. Try again in a few minutes, or use another machine.",
                                                machine=machine.name)),
            "out_of_service": (_("Out of service"), _("Slot {slot} is out of service. Choose something else from the "
                                                      "menu. You have not been charged.", slot=slot)),
            "unknown_slot": (_("Cannot buy this"), _("{machine} has no slot {slot}. Choose from the menu.",
                                                     machine=machine.name, slot=slot)),
            "payment_unavailable": (_("Cannot buy this"), _("This way of paying is not available right now. Try again "
                                                            "later.")),
        }.get(e.code, (_("Cannot buy this"), _("This order could not be placed. Go back to the menu and try again.")))
        return problem(request, 409, title, message, (_("Back to the menu"), f"/m/{machine_id}"))

    def declined(request: Request, order, customer):
        _ = pages.translator(request)
        back = f"/m/{order.machine_id}"
        if order.provider != "wallet":
            return problem(request, 402, _("Payment declined"),
                           _("The payment provider declined this payment. You have not been charged. Try again, or "
                             "choose another way to pay."), (_("Back to the menu"), back))
        with engine.connect() as conn:
            balance = cloud.provider.balance(conn, customer.id, order.currency)
            item = machines.slot_for_sale(conn, order.machine_id, order.slot)
        return problem(request, 402, _("Payment declined"),
                       _("Your wallet holds {balance}, and {product} costs {price}. You have not been charged. Top up "
                         "your wallet, then buy again.",
                         balance=i18n.money(balance, order.currency, i18n.language_of(request)),
                         product=item.name if item else order.slot,
                         price=i18n.money(order.amount, order.currency, i18n.language_of(request))),
                       (_("Top up"), f"/wallet?next={back}"))

    @app.get("/m/{machine_id}/buy")
    def buy_again(machine_id: str):
        """The language link on a page a purchase answered (sold out, declined...) asks for it again by GET."""
        return RedirectResponse(f"/m/{machine_id}", status_code=303)

    @app.post("/m/{machine_id}/buy", response_class=HTMLResponse)
    def buy(request: Request, machine_id: str, slot: str = Form(""), key: str = Form("")):
        _ = pages.translator(request)
        customer = current_customer(request)
        if customer is None:
            return RedirectResponse(f"/register?next=/m/{machine_id}", status_code=303)
        if not visiting(request, machine_id):
            return not_scanned(request)
        if not valid_form_key(key):
            return problem(request, 400, _("Please try again"), _("The order form was incomplete: reload the menu."),
                           (_("Back to the menu"), f"/m/{machine_id}"))
        try:
            with engine.begin() as conn:
                order, created = orders.place(conn, cloud.provider, customer.id, machine_id, slot, key, utcnow(),
                                              settings.vend_timeout_s)
        except orders.OrderError as e:
            return cannot_buy(request, e, machine_id, slot)
        except machines.FleetError:
            return unknown_machine(request, machine_id)
        if order.status == "declined":
            return declined(request, order, customer)
        if created and order.status == "authorised":
            cloud.send_vend(order)
        elif created and order.status == orders.WAITING:
            cloud.provider.kick()
        return RedirectResponse(f"/orders/{order.id}", status_code=303)

    def own_order(request: Request, order_id: str):
        """The order if it is this phone's customer's, else None (someone else's looks like no order)."""
        customer = current_customer(request)
        with engine.connect() as conn:
            order = orders.get(conn, order_id)
        if order is None or customer is None or order.customer_id != customer.id:
            return None
        return order

    def no_order(request: Request):
        _ = pages.translator(request)
        return problem(request, 404, _("No such order"), _("This order does not exist or is not yours. Your orders "
                                                           "are listed in your wallet."),
                       (_("Wallet"), "/wallet"))

    @app.get("/orders/{order_id}", response_class=HTMLResponse)
    def order_page(request: Request, order_id: str):
        order = own_order(request, order_id)
        if order is None:
            return no_order(request)
        with engine.connect() as conn:
            item = machines.slot_for_sale(conn, order.machine_id, order.slot)
            balance = cloud.provider.balance(conn, order.customer_id, order.currency)
            refunded = cloud.provider.refunded(conn, order)[1] if order.status in orders.REFUNDABLE else 0
        return page(request, "order.html", order=order, item=item,
                    text=status_text(pages.translator(request), order.status),
                    settled=order.status in orders.SETTLED, balance=balance, refunded=refunded)

    def order_event(request: Request, order_id: str, customer_id: int) -> dict | None:
        with engine.connect() as conn:
            order = orders.get(conn, order_id)
            if order is None or order.customer_id != customer_id:
                return None
            settled = order.status in orders.SETTLED
            balance = cloud.provider.balance(conn, customer_id, order.currency) if settled else None
        lang = i18n.language_of(request)
        return {"status": order.status, "settled": settled,
                "text": status_text(pages.translator(request), order.status),
                "balance": i18n.money(balance, order.currency, lang) if balance is not None else None}

    @app.get("/orders/{order_id}/events")
    async def order_events(request: Request, order_id: str):
        """The order's status as server-sent events: one when it changes, ending when it settles (or after
        EVENTS_LONGEST_S, when the browser reconnects). The database is polled in the threadpool: cheap, and
        the same whether or not the cloud that takes the machine's answer is this process."""
        customer = await run_in_threadpool(current_customer, request)
        first = await run_in_threadpool(order_event, request, order_id, customer.id) if customer else None
        if first is None:
            return JSONResponse({"error": "no such order"}, status_code=404)

        async def stream():
            yield "retry: 2000\n\n"
            event, last, until = first, None, time.monotonic() + EVENTS_LONGEST_S
            while event is not None:
                if event != last:
                    yield f"event: status\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
                    last = event
                if event["settled"] or time.monotonic() > until or await request.is_disconnected():
                    break
                await asyncio.sleep(EVENTS_POLL_S)
                event = await run_in_threadpool(order_event, request, order_id, customer.id)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/orders/{order_id}/receipt", response_class=HTMLResponse)
    def receipt(request: Request, order_id: str):
        order = own_order(request, order_id)
        if order is None:
            return no_order(request)
        with engine.connect() as conn:
            machine = machines.get(conn, order.machine_id)
            item = machines.slot_for_sale(conn, order.machine_id, order.slot)
            refunds = receipts.refunds_of(conn, order.id)
        return page(request, "customer_receipt.html", order=order, machine=machine, item=item, refunds=refunds,
                    refunded=sum(r.amount for r in refunds),
                    text=status_text(pages.translator(request), order.status))

    @app.get("/wallet", response_class=HTMLResponse)
    def wallet(request: Request, next: str = ""):
        customer = current_customer(request)
        if customer is None:
            return RedirectResponse("/register?next=/wallet", status_code=303)
        return wallet_page(request, customer, next)

    @app.get("/wallet/topup")
    def topup_again(next: str = ""):
        return RedirectResponse(f"/wallet?next={safe_next(next)}" if next else "/wallet", status_code=303)

    @app.post("/wallet/topup", response_class=HTMLResponse)
    def topup(request: Request, amount: str = Form(""), key: str = Form(""), next: str = Form("")):
        _ = pages.translator(request)
        customer = current_customer(request)
        if customer is None:
            return RedirectResponse("/register?next=/wallet", status_code=303)
        lang = i18n.language_of(request)
        try:
            if not valid_form_key(key):
                raise PaymentError(_("The form was incomplete: reload the page."))
            try:
                minor = parse_amount(amount, DEMO_CURRENCY)
            except ValueError:
                raise PaymentError(_("Amount: “{amount}” is not an amount more than zero: write it like 10 or "
                                     "10.50.", amount=amount)) from None
            if minor > MAX_TOPUP:
                raise PaymentError(_("Amount: a top-up is {most} at most.",
                                     most=i18n.money(MAX_TOPUP, DEMO_CURRENCY, lang)))
            with engine.begin() as conn:
                cloud.provider.topup(conn, customer.id, minor, DEMO_CURRENCY, f"{customer.id}:{key}", utcnow())
        except IdempotencyConflict:
            # An old form (the back button) sent again with another amount: its top-up was done already.
            return wallet_page(request, customer, next, status_code=409, amount=amount, error=_(
                "That top-up was done already, for another amount. Nothing more was added: check the balance, then "
                "top up again here."))
        except PaymentError as e:
            return wallet_page(request, customer, next, error=str(e), status_code=422, amount=amount)
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
                "text": status_text(pages.translator(request), order.status), "amount": order.amount,
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

