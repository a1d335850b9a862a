"""A local fake of WeChat Pay API v3 and of WeChat's web OAuth, following their published formats.

Only what the cloud uses: the platform certificates (``GET /v3/certificates``, each AEAD_AES_256_GCM
encrypted under the merchant's API v3 key), JSAPI orders (create, query by out_trade_no, close), refunds
(create, query), the trade bill (``/v3/bill/tradebill`` and its download: a CSV whose every field starts
with a backquote, a summary at the end), payment notifications (signed with the platform key, the resource
encrypted with the API v3 key), and the OAuth ``snsapi_base`` page and token exchange.

Every request must carry the merchant's ``Authorization: WECHATPAY2-SHA256-RSA2048 ...`` signature, checked
against the merchant certificate's key; every 2xx answer is signed with the platform key
(``Wechatpay-Signature`` over ``{timestamp}\\n{nonce}\\n{body}\\n``), as the real gateway does.

Two pages stand in for what the WeChat app itself shows: the OAuth page (``snsapi_base`` is silent in
WeChat; here a form says which WeChat user is on the phone) and ``/fake/jsapi``, where a browser test's
stand-in ``WeixinJSBridge`` sends the signed ``getBrandWCPayRequest`` parameters: the fake checks
``paySign`` against the merchant key and offers "Pay" and "Cancel"; paying sends the notification.

Faults for tests: ``fail(prefix, kind)`` makes the next request whose path starts with ``prefix`` answer
500 (``"500"``), stall past the client's timeout without acting (``"timeout"``), or act and then stall, so
its answer is lost (``"lost"``).
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import re
import secrets
import string
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from cryptography.hazmat.primitives import serialization

from tests.fakes.wechat_formats import (AUTH_RE, BEIJING, BILL_HEADER, BILL_SUMMARY, FEE_RATE_PER_MILLE,
                                     OUT_REFUND_NO_RE, OUT_TRADE_NO_RE, Keys, Refused, _nonce, aead_encrypt,
                                     rsa_sign, rsa_verify, yuan)
from tests.fakes.wechat_payscore import PayScore



class FakeWeChatPay(PayScore):
    """The platform's books and its HTTP server (``start()`` gives its base URL)."""

    def __init__(self, keys: Keys | None = None, stall_s: float = 2.0, notify_retry_s: float = 0.5,
                 public_key_mode: bool = False):
        self.keys = keys or Keys()
        self.clock = lambda: datetime.now(timezone.utc)  # when a trade's time_expire is held against
        self.refund_status = "SUCCESS"  # what a new refund answers: SUCCESS at once, or PROCESSING (finish_refund)
        # A merchant on WeChat Pay's public key (no platform certificates): answers name its key id.
        self.serial = self.keys.public_key_id if public_key_mode else self.keys.platform_serial
        self.stall_s = stall_s
        self.notify_retry_s = notify_retry_s
        self.trades: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.service_orders: dict[str, dict] = {}  # WeChat Pay Score service orders by out_order_no
        self.service_id = "500001"
        # Take a completed service order's amount at once and notify (as WeChat Pay does, moments later);
        # off: a test calls payscore_collect itself.
        self.auto_collect = False
        self.users: set[str] = set()
        self.codes: dict[str, tuple[str, float]] = {}
        self.bills: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every signed API request
        self.deliveries: list[dict] = []  # every notification sent: url, headers, body, status
        self.faults: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self.server: ThreadingHTTPServer | None = None
        self.url = ""

    # -- running ---------------------------------------------------------------------------------------

    def start(self, port: int = 0) -> str:
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True, name="fake-wechat").start()
        return self.url

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def fail(self, prefix: str, kind: str) -> None:
        """The next request whose path starts with ``prefix`` fails as ``kind`` ("500", "timeout", "lost")."""
        with self.lock:
            self.faults.append((prefix, kind))

    def _fault(self, path: str) -> str | None:
        with self.lock:
            for i, (prefix, kind) in enumerate(self.faults):
                if path.startswith(prefix):
                    del self.faults[i]
                    return kind
        return None

    # -- people in WeChat --------------------------------------------------------------------------------

    def new_user(self) -> str:
        openid = "o" + _nonce(27)
        with self.lock:
            self.users.add(openid)
        return openid

    def issue_code(self, openid: str) -> str:
        code = _nonce(32)
        with self.lock:
            self.users.add(openid)
            self.codes[code] = (openid, time.time() + 300)
        return code

    # -- the platform's side of a payment ------------------------------------------------------------------

    def pay(self, out_trade_no: str, when: datetime | None = None, notify: bool = True) -> dict:
        """The customer pays in WeChat: the trade succeeds and (``notify``) its notification is sent."""
        with self.lock:
            trade = self.trades[out_trade_no]
            if trade["trade_state"] != "NOTPAY":
                raise Refused(400, "ORDERPAID", f"trade {out_trade_no} is {trade['trade_state']}")
            if trade["time_expire"] and self.clock() > datetime.fromisoformat(trade["time_expire"]):
                trade.update(trade_state="CLOSED", trade_state_desc="已关闭")
                raise Refused(400, "ORDER_CLOSED", f"trade {out_trade_no} expired at {trade['time_expire']}")
            trade.update(trade_state="SUCCESS", trade_state_desc="支付成功", bank_type="OTHERS",
                         transaction_id="42000" + "".join(secrets.choice(string.digits) for _ in range(23)),
                         success_time=(when or datetime.now(BEIJING)).astimezone(BEIJING).isoformat(
                             timespec="seconds"))
        if notify:
            self.notify(out_trade_no)
        return trade

    def notification(self, out_trade_no: str, resource: dict | None = None, event_type: str = "TRANSACTION.SUCCESS",
                     sign_with=None, timestamp: int | None = None) -> tuple[dict, bytes]:
        """(headers, body) of a payment notification, signed and encrypted as the platform does (tests may
        give another ``resource``, key or timestamp to forge one)."""
        resource = resource if resource is not None else self.public_trade(self.trades[out_trade_no])
        body = json.dumps({
            "id": secrets.token_hex(18), "create_time": datetime.now(BEIJING).isoformat(timespec="seconds"),
            "resource_type": "encrypt-resource", "event_type": event_type, "summary": "支付成功",
            "resource": {"original_type": "transaction",
                         **aead_encrypt(self.keys.apiv3_key, json.dumps(resource, ensure_ascii=False),
                                        "transaction")}}, ensure_ascii=False)
        return self.signed_headers(body, sign_with, timestamp), body.encode()

    def signed_headers(self, body: str, key=None, timestamp: int | None = None) -> dict:
        ts, nonce = str(timestamp or int(time.time())), _nonce(32)
        return {"Wechatpay-Timestamp": ts, "Wechatpay-Nonce": nonce,
                "Wechatpay-Signature": rsa_sign(key or self.keys.platform_key, f"{ts}\n{nonce}\n{body}\n"),
                "Wechatpay-Serial": self.serial,
                "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048"}

    def notify(self, out_trade_no: str, tries: int = 5) -> dict:
        """Send the trade's notification to its notify_url until answered 2xx (as WeChat Pay retries)."""
        url = self.trades[out_trade_no]["notify_url"]
        headers, body = self.notification(out_trade_no)
        return self.deliver(url, headers, body, tries)

    def deliver(self, url: str, headers: dict, body: bytes, tries: int = 1) -> dict:
        record = {"url": url, "headers": headers, "body": body, "status": None}
        for attempt in range(tries):
            try:
                r = requests.post(url, data=body, headers={**headers, "Content-Type": "application/json"},
                                  timeout=10)
                record["status"] = r.status_code
                record["answer"] = r.text
                if 200 <= r.status_code < 300:
                    break
            except requests.RequestException as e:
                record["status"] = f"unreachable: {e}"
            time.sleep(self.notify_retry_s * (attempt + 1))
        with self.lock:
            self.deliveries.append(record)
        return record

    @staticmethod
    def public_trade(trade: dict) -> dict:
        out = {k: trade[k] for k in ("appid", "mchid", "out_trade_no", "trade_type", "trade_state",
                                     "trade_state_desc", "attach") if k in trade}
        for k in ("transaction_id", "bank_type", "success_time"):
            if k in trade:
                out[k] = trade[k]
        out["payer"] = {"openid": trade["openid"]}
        total = trade["amount"]["total"]
        out["amount"] = {"total": total, "currency": trade["amount"]["currency"], "payer_currency": "CNY",
                         "payer_total": total if trade["trade_state"] == "SUCCESS" else 0}
        return out

    # -- the API ---------------------------------------------------------------------------------------

    def check_authorization(self, method: str, path: str, header: str | None, body: str) -> None:
        m = AUTH_RE.match(header or "")
        if not m:
            raise Refused(401, "SIGN_ERROR", "Authorization must be WECHATPAY2-SHA256-RSA2048")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if fields.get("mchid") != self.keys.mchid:
            raise Refused(401, "SIGN_ERROR", "mchid in Authorization is not a merchant here")
        if fields.get("serial_no", "").upper() != self.keys.merchant_serial:
            raise Refused(401, "SIGN_ERROR", "serial_no is not the merchant certificate's")
        if not fields.get("timestamp", "").isdigit() or abs(time.time() - int(fields["timestamp"])) > 300:
            raise Refused(401, "SIGN_ERROR", "timestamp is more than 5 minutes off")
        message = f"{method}\n{path}\n{fields['timestamp']}\n{fields.get('nonce_str', '')}\n{body}\n"
        if not rsa_verify(self.keys.merchant_key.public_key(), message, fields.get("signature", "")):
            raise Refused(401, "SIGN_ERROR", "signature verification failed")

    def api(self, method: str, target: str, body: dict | None) -> tuple[int, dict | bytes | None]:
        split = urlsplit(target)
        path, query = split.path, {k: v[0] for k, v in parse_qs(split.query).items()}
        with self.lock:
            if method == "GET" and path == "/v3/certificates":
                return 200, {"data": [{
                    "serial_no": self.keys.platform_serial,
                    "effective_time": self.keys.platform_cert.not_valid_before_utc.astimezone(BEIJING).isoformat(),
                    "expire_time": self.keys.platform_cert.not_valid_after_utc.astimezone(BEIJING).isoformat(),
                    "encrypt_certificate": aead_encrypt(
                        self.keys.apiv3_key,
                        self.keys.platform_cert.public_bytes(serialization.Encoding.PEM).decode(), "certificate")}]}
            if method == "POST" and path == "/v3/pay/transactions/jsapi":
                return self._jsapi(body or {})
            m = re.fullmatch(r"/v3/pay/transactions/out-trade-no/([^/]+)(/close)?", path)
            if m:
                trade = self.trades.get(m.group(1))
                mchid = (body or {}).get("mchid") if m.group(2) else query.get("mchid")
                if mchid != self.keys.mchid:
                    raise Refused(400, "PARAM_ERROR", "mchid is not this merchant")
                if trade is None:
                    raise Refused(404, "ORDER_NOT_EXIST", "订单不存在")
                if method == "GET" and not m.group(2):
                    return 200, self.public_trade(trade)
                if method == "POST" and m.group(2):
                    if trade["trade_state"] == "SUCCESS":
                        raise Refused(400, "ORDERPAID", "订单已支付")
                    trade.update(trade_state="CLOSED", trade_state_desc="已关闭")
                    return 204, None
            if path.startswith("/v3/payscore/serviceorder"):
                return self._payscore(method, path, query, body or {})
            if method == "POST" and path == "/v3/refund/domestic/refunds":
                return self._refund(body or {})
            m = re.fullmatch(r"/v3/refund/domestic/refunds/([^/]+)", path)
            if method == "GET" and m:
                if m.group(1) not in self.refunds:
                    raise Refused(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
                return 200, self.refunds[m.group(1)]
            if method == "GET" and path == "/v3/bill/tradebill":
                return self._tradebill(query)
            if method == "GET" and path == "/v3/billdownload/file":
                data = self.bills.get(query.get("token", ""))
                if data is None:
                    raise Refused(404, "RESOURCE_NOT_EXISTS", "no such bill")
                return 200, data
        raise Refused(404, "NOT_FOUND", f"no such endpoint: {method} {path}")

    def _jsapi(self, body: dict):
        for name in ("appid", "mchid", "description", "out_trade_no", "notify_url", "amount", "payer"):
            if not body.get(name):
                raise Refused(400, "PARAM_ERROR", f"{name} is required")
        if body["appid"] != self.keys.appid or body["mchid"] != self.keys.mchid:
            raise Refused(400, "APPID_MCHID_NOT_MATCH", "appid and mchid do not match")
        if not OUT_TRADE_NO_RE.match(str(body["out_trade_no"])):
            raise Refused(400, "PARAM_ERROR", "out_trade_no must be 6 to 32 letters, digits, _-|*")
        total, currency = body["amount"].get("total"), body["amount"].get("currency", "CNY")
        if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
            raise Refused(400, "PARAM_ERROR", "amount.total must be a whole number of fen above zero")
        if currency != "CNY":
            raise Refused(400, "PARAM_ERROR", "amount.currency must be CNY")
        openid = body["payer"].get("openid")
        if openid not in self.users:
            raise Refused(400, "PARAM_ERROR", "payer.openid is not a user of this appid")
        fingerprint = (total, currency, openid, body["description"])
        trade = self.trades.get(body["out_trade_no"])
        if trade is not None:
            if trade["fingerprint"] != fingerprint:
                raise Refused(400, "INVALID_REQUEST", "out_trade_no was used with other parameters")
            if trade["trade_state"] == "SUCCESS":
                raise Refused(400, "ORDERPAID", "订单已支付")
            if trade["trade_state"] == "CLOSED":
                raise Refused(400, "ORDER_CLOSED", "订单已关闭")
            return 200, {"prepay_id": trade["prepay_id"]}
        self.trades[body["out_trade_no"]] = trade = {
            "appid": body["appid"], "mchid": body["mchid"], "out_trade_no": body["out_trade_no"],
            "trade_type": "JSAPI", "trade_state": "NOTPAY", "trade_state_desc": "未支付",
            "attach": body.get("attach", ""), "description": body["description"], "openid": openid,
            "time_expire": body.get("time_expire", ""),
            "notify_url": body["notify_url"], "amount": {"total": total, "currency": currency},
            "prepay_id": "wx" + datetime.now(BEIJING).strftime("%d%H%M%S") + secrets.token_hex(12),
            "fingerprint": fingerprint, "refunded": 0}
        return 200, {"prepay_id": trade["prepay_id"]}

    def _refund(self, body: dict):
        out_refund_no = body.get("out_refund_no")
        if not isinstance(out_refund_no, str) or not OUT_REFUND_NO_RE.match(out_refund_no):
            raise Refused(400, "PARAM_ERROR", "out_refund_no must be 1 to 64 letters, digits, _-|*@")
        trade = self.trades.get(body.get("out_trade_no")) or next(
            (t for t in self.trades.values() if body.get("transaction_id") and
             t.get("transaction_id") == body.get("transaction_id")), None)
        if trade is None:
            raise Refused(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        amount = body.get("amount") or {}
        refund, total = amount.get("refund"), amount.get("total")
        fingerprint = (trade["out_trade_no"], refund, total, amount.get("currency"))
        if out_refund_no in self.refunds:
            if self.refunds[out_refund_no]["fingerprint"] != fingerprint:
                raise Refused(400, "INVALID_REQUEST", "out_refund_no was used with other parameters")
            return 200, self._public_refund(self.refunds[out_refund_no])
        if trade["trade_state"] not in ("SUCCESS", "REFUND"):
            raise Refused(400, "INVALID_REQUEST", f"the trade is {trade['trade_state']}: nothing to refund")
        if total != trade["amount"]["total"]:
            raise Refused(400, "PARAM_ERROR", "amount.total is not the trade's total")
        if amount.get("currency") != "CNY":
            raise Refused(400, "PARAM_ERROR", "amount.currency must be CNY")
        if not isinstance(refund, int) or isinstance(refund, bool) or refund <= 0:
            raise Refused(400, "PARAM_ERROR", "amount.refund must be a whole number of fen above zero")
        if refund > total - trade["refunded"]:
            raise Refused(403, "NOT_ENOUGH", "the refund is more than what is left of the trade")
        trade["refunded"] += refund
        trade.update(trade_state="REFUND", trade_state_desc="转入退款")
        now = datetime.now(BEIJING).isoformat(timespec="seconds")
        self.refunds[out_refund_no] = record = {
            "refund_id": "50300" + "".join(secrets.choice(string.digits) for _ in range(24)),
            "out_refund_no": out_refund_no, "transaction_id": trade["transaction_id"],
            "out_trade_no": trade["out_trade_no"], "channel": "ORIGINAL", "user_received_account": "支付用户零钱",
            "create_time": now, "status": self.refund_status, "funds_account": "AVAILABLE",
            "amount": {"total": total, "refund": refund, "payer_total": total, "payer_refund": refund,
                       "settlement_total": total, "settlement_refund": refund, "discount_refund": 0,
                       "currency": "CNY"},
            "fingerprint": fingerprint}
        if self.refund_status == "SUCCESS":
            record["success_time"] = now
        return 200, self._public_refund(record)

    def finish_refund(self, out_refund_no: str, status: str = "SUCCESS") -> tuple[dict, bytes]:
        """A PROCESSING refund ends (SUCCESS, ABNORMAL or CLOSED): (headers, body) of its REFUND.* notification."""
        with self.lock:
            record = self.refunds[out_refund_no]
            record["status"] = status
            if status == "SUCCESS":
                record["success_time"] = datetime.now(BEIJING).isoformat(timespec="seconds")
            else:
                self.trades[record["out_trade_no"]]["refunded"] -= record["amount"]["refund"]
            resource = {"mchid": self.keys.mchid, "out_trade_no": record["out_trade_no"],
                        "transaction_id": record["transaction_id"], "out_refund_no": out_refund_no,
                        "refund_id": record["refund_id"], "refund_status": status,
                        "success_time": record.get("success_time", ""), "user_received_account": "支付用户零钱",
                        "amount": {k: record["amount"][k] for k in ("total", "refund", "payer_total", "payer_refund")}}
        body = json.dumps({
            "id": secrets.token_hex(18), "create_time": datetime.now(BEIJING).isoformat(timespec="seconds"),
            "resource_type": "encrypt-resource", "event_type": f"REFUND.{status}", "summary": "退款状态变更",
            "resource": {"original_type": "refund",
                         **aead_encrypt(self.keys.apiv3_key, json.dumps(resource, ensure_ascii=False), "refund")}},
            ensure_ascii=False)
        return self.signed_headers(body), body.encode()

    @staticmethod
    def _public_refund(record: dict) -> dict:
        return {k: v for k, v in record.items() if k != "fingerprint"}

    # -- WeChat Pay Score: service orders the customer confirms, completed (and collected) after the service

    def _tradebill(self, query: dict):
        day = query.get("bill_date", "")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
            raise Refused(400, "PARAM_ERROR", "bill_date must be YYYY-MM-DD")
        data = self.bill(day).encode()
        token = secrets.token_hex(16)
        self.bills[token] = gzip.compress(data) if query.get("tar_type") == "GZIP" else data
        return 200, {"hash_type": "SHA1", "hash_value": hashlib.sha1(data).hexdigest(),
                     "download_url": f"{self.url}/v3/billdownload/file?token={token}"}

    def bill(self, day: str) -> str:
        """The trade bill (bill_type ALL) of a Beijing ``day``: every success and refund of that day."""
        rows, count, settled, refunded, fees = [], 0, 0, 0, 0
        for trade in self.trades.values():
            if trade.get("success_time", "")[:10] == day:
                fee = (trade["amount"]["total"] * FEE_RATE_PER_MILLE + 500) // 1000
                rows.append(self._bill_row(trade, trade["success_time"], "SUCCESS", trade["amount"]["total"],
                                           None, fee))
                count, settled, fees = count + 1, settled + trade["amount"]["total"], fees + fee
        for refund in self.refunds.values():
            if refund.get("success_time", "")[:10] == day:
                trade = self.trades[refund["out_trade_no"]]
                fee = -((refund["amount"]["refund"] * FEE_RATE_PER_MILLE + 500) // 1000)
                rows.append(self._bill_row(trade, refund["success_time"], "REFUND", 0, refund, fee))
                count, refunded, fees = count + 1, refunded + refund["amount"]["refund"], fees + fee
        if not rows:
            raise Refused(400, "NO_STATEMENT_EXIST", "该日期无账单")
        summary = [str(count), yuan(settled), yuan(refunded), "0.00", yuan(fees), yuan(settled), yuan(refunded)]
        return "\n".join([BILL_HEADER, *rows, BILL_SUMMARY, ",".join("`" + v for v in summary)]) + "\n"

    def _bill_row(self, trade: dict, when: str, state: str, settled: int, refund: dict | None, fee: int) -> str:
        at = datetime.fromisoformat(when).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")
        total = trade["amount"]["total"]
        values = [at, trade["appid"], trade["mchid"], "0", "", trade["transaction_id"], trade["out_trade_no"],
                  trade["openid"], trade["trade_type"], state, "OTHERS", "CNY", yuan(settled), "0.00",
                  refund["refund_id"] if refund else "0", refund["out_refund_no"] if refund else "0",
                  yuan(refund["amount"]["refund"]) if refund else "0.00", "0.00",
                  "ORIGINAL" if refund else "", "SUCCESS" if refund else "", trade["description"],
                  trade.get("attach", ""), yuan(fee), "0.60%", yuan(0 if refund else total),
                  yuan(refund["amount"]["refund"]) if refund else "0.00", ""]
        return ",".join("`" + v for v in values)

    # -- OAuth and the JSAPI stand-in page --------------------------------------------------------------------

    def access_token(self, query: dict) -> dict:
        if query.get("appid") != self.keys.appid:
            return {"errcode": 40013, "errmsg": "invalid appid"}
        if query.get("secret") != self.keys.app_secret:
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        if query.get("grant_type") != "authorization_code":
            return {"errcode": 40002, "errmsg": "invalid grant_type"}
        with self.lock:
            found = self.codes.pop(query.get("code", ""), None)
        if found is None or found[1] < time.time():
            return {"errcode": 40029, "errmsg": "invalid code"}
        return {"access_token": secrets.token_hex(32), "expires_in": 7200, "refresh_token": secrets.token_hex(32),
                "openid": found[0], "scope": "snsapi_base"}

    def check_pay_sign(self, q: dict) -> dict:
        """The trade a ``getBrandWCPayRequest`` call names, if its paySign is the merchant's."""
        message = f"{q.get('appId', '')}\n{q.get('timeStamp', '')}\n{q.get('nonceStr', '')}\n{q.get('package', '')}\n"
        if q.get("appId") != self.keys.appid or q.get("signType") != "RSA" or \
                not rsa_verify(self.keys.merchant_key.public_key(), message, q.get("paySign", "")):
            raise Refused(400, "SIGN_ERROR", "paySign does not verify")
        prepay_id = q.get("package", "").removeprefix("prepay_id=")
        trade = next((t for t in self.trades.values() if t["prepay_id"] == prepay_id), None)
        if trade is None:
            raise Refused(400, "PARAM_ERROR", "no such prepay_id")
        return trade


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>"""


class _Handler(BaseHTTPRequestHandler):
    fake: FakeWeChatPay

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a client that gave up waiting (a test's "lost" answer)

    def _page(self, title: str, body: str, status: int = 200) -> None:
        self._send(status, PAGE.format(title=html.escape(title), body=body).encode(), "text/html; charset=utf-8")

    def _redirect(self, url: str) -> None:
        self.send_response(302)
        self.send_header("Location", url)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        fake = self.fake
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        if split.path.startswith("/connect/oauth2/authorize"):
            return self._oauth(method, query, raw)
        if split.path == "/sns/oauth2/access_token":
            return self._send(200, json.dumps(fake.access_token(query)).encode(), "application/json")
        if split.path == "/fake/jsapi":
            return self._jsapi_page(method, query, raw)
        if split.path == "/fake/payscore":
            return self._payscore_page(method, query, raw)
        fault = fake._fault(split.path)
        if fault == "500":
            return self._send(500, b'{"code":"SYSTEM_ERROR","message":"system error"}', "application/json")
        if fault == "timeout":
            time.sleep(fake.stall_s)
            return self._send(500, b'{"code":"SYSTEM_ERROR","message":"timed out"}', "application/json")
        try:
            fake.check_authorization(method, self.path, self.headers.get("Authorization"), raw)
            with fake.lock:
                fake.requests.append((method, self.path))
            status, answer = fake.api(method, self.path, json.loads(raw) if raw else None)
        except Refused as e:
            status, answer = e.status, {"code": e.code, "message": str(e)}
        except ValueError as e:
            status, answer = 400, {"code": "PARAM_ERROR", "message": f"not JSON: {e}"}
        if fault == "lost":
            time.sleep(fake.stall_s)
        if isinstance(answer, bytes):
            return self._send(status, answer, "application/octet-stream")
        text = "" if answer is None else json.dumps(answer, ensure_ascii=False)
        headers = fake.signed_headers(text) if 200 <= status < 300 else {}
        headers["Request-ID"] = secrets.token_hex(16)
        self._send(status, text.encode(), "application/json; charset=utf-8", headers)

    def _oauth(self, method: str, query: dict, raw: str) -> None:
        fake = self.fake
        if method == "POST":
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            openid = form.get("openid") or fake.new_user()
            code = fake.issue_code(openid)
            sep = "&" if "?" in form.get("redirect_uri", "") else "?"
            return self._redirect(f"{form.get('redirect_uri', '')}{sep}"
                                  + urlencode({"code": code, "state": form.get("state", "")}))
        if query.get("appid") != fake.keys.appid or query.get("response_type") != "code" or \
                query.get("scope") not in ("snsapi_base", "snsapi_userinfo") or not query.get("redirect_uri"):
            return self._page("WeChat", "<p>appid, redirect_uri, response_type=code and scope are required</p>",
                              400)
        openid = fake.new_user()
        body = (f'<p>WeChat (fake): the phone is signed in to WeChat as</p><form method="post">'
                f'<input name="openid" value="{openid}" aria-label="WeChat user">'
                f'<input type="hidden" name="redirect_uri" value="{html.escape(query["redirect_uri"])}">'
                f'<input type="hidden" name="state" value="{html.escape(query.get("state", ""))}">'
                f'<button type="submit">Continue</button></form>')
        self._page("WeChat", body)

    def _jsapi_page(self, method: str, query: dict, raw: str) -> None:
        fake = self.fake
        if method == "POST":
            query = {k: v[0] for k, v in parse_qs(raw).items()}
        back = query.get("return", "")
        try:
            trade = fake.check_pay_sign(query)
        except Refused as e:
            return self._page("WeChat Pay", f"<p>{html.escape(str(e))}</p>", 400)
        if method == "POST":
            paid = query.get("choice") == "pay"
            if paid and trade["trade_state"] == "NOTPAY":
                try:
                    fake.pay(trade["out_trade_no"], notify=False)
                except Refused as e:
                    return self._page("WeChat Pay", f"<p>{html.escape(str(e))}</p>", 400)
                threading.Thread(target=fake.notify, args=(trade["out_trade_no"],), daemon=True).start()
            # Back to the merchant's page with what WeixinJSBridge's callback would have said.
            result = "ok" if paid else "cancel"
            sep = "&" if "?" in back else "?"
            return self._redirect(f"{back}{sep}result={result}")
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in query.items())
        total = trade["amount"]["total"]
        body = (f"<p>{html.escape(trade['description'])}</p><p>¥{yuan(total)}</p>"
                f'<form method="post">{hidden}<button name="choice" value="pay">Pay</button>'
                f'<button name="choice" value="cancel">Cancel</button></form>')
        self._page("WeChat Pay", body)

    def _payscore_page(self, method: str, query: dict, raw: str) -> None:
        """What ``openBusinessView('wxpayScoreUse', ...)`` shows: the service order to confirm."""
        fake = self.fake
        if method == "POST":
            query = {k: v[0] for k, v in parse_qs(raw).items()}
        back = query.get("return", "")
        try:
            order = fake.check_business_view(query)
        except Refused as e:
            return self._page("WeChat Pay Score", f"<p>{html.escape(str(e))}</p>", 400)
        if method == "POST":
            confirmed = query.get("choice") == "confirm"
            if confirmed and order["state"] == "CREATED":
                headers, body = fake.payscore_confirm(order["out_order_no"])
                threading.Thread(target=fake.deliver, args=(order["notify_url"], headers, body, 5),
                                 daemon=True).start()
            sep = "&" if "?" in back else "?"
            return self._redirect(f"{back}{sep}result={'ok' if confirmed else 'cancel'}")
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in query.items())
        body = (f"<p>{html.escape(order['service_introduction'])}</p>"
                f"<p>Up to ¥{yuan(order['risk_fund']['amount'])}, paid after the service</p>"
                f'<form method="post">{hidden}<button name="choice" value="confirm">Confirm</button>'
                f'<button name="choice" value="cancel">Cancel</button></form>')
        self._page("WeChat Pay Score", body)
