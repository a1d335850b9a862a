"""The fake's WeChat Pay Score: service orders (create, query, complete, cancel) the customer confirms in
WeChat (``payscore_confirm``, or the ``openBusinessView`` sheet), completed after the service and collected
(``payscore_collect``: a payment of its own, in the bill and refundable), with their PAYSCORE.* notifications."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import time
from datetime import datetime

from tests.fakes.wechat_formats import BEIJING, OUT_TRADE_NO_RE, Refused, aead_encrypt


class PayScore:
    """Mixed into ``FakeWeChatPay`` (which has ``keys``, ``lock``, ``users``, ``trades``, ``service_orders``,
    ``service_id``, ``auto_collect``, ``new_user``, ``signed_headers`` and ``deliver``)."""

    def _payscore(self, method: str, path: str, query: dict, body: dict):
        if method == "GET" and path == "/v3/payscore/serviceorder":
            if query.get("service_id") != self.service_id or query.get("appid") != self.keys.appid:
                raise Refused(400, "PARAM_ERROR", "service_id or appid is not this merchant's")
            order = self.service_orders.get(query.get("out_order_no", ""))
            if order is None:
                raise Refused(404, "ORDER_NOT_EXIST", "订单不存在")
            return 200, self.public_service_order(order)
        if body.get("service_id") != self.service_id or body.get("appid") != self.keys.appid:
            raise Refused(400, "PARAM_ERROR", "service_id or appid is not this merchant's")
        if method == "POST" and path == "/v3/payscore/serviceorder":
            return self._payscore_create(body)
        m = re.fullmatch(r"/v3/payscore/serviceorder/([^/]+)/(complete|cancel)", path)
        if method != "POST" or not m:
            raise Refused(404, "NOT_FOUND", f"no such endpoint: {method} {path}")
        order = self.service_orders.get(m.group(1))
        if order is None:
            raise Refused(404, "ORDER_NOT_EXIST", "订单不存在")
        if m.group(2) == "cancel":
            if order["state"] in ("CREATED", "DOING") and order.get("state_description") != "MCH_COMPLETE":
                order.update(state="REVOKED", state_description="", reason=body.get("reason", ""))
            elif order["state"] != "REVOKED":
                raise Refused(400, "INVALID_REQUEST", f"the service order is {order['state']}: it cannot be cancelled")
            return 200, self.public_service_order(order)
        total = body.get("total_amount")
        if order["state"] != "DOING":
            raise Refused(400, "INVALID_REQUEST", f"the service order is {order['state']}: the user has not confirmed it")
        if not isinstance(total, int) or isinstance(total, bool) or total < 0 or total > order["risk_fund"]["amount"]:
            raise Refused(400, "PARAM_ERROR", "total_amount must be whole fen, at most the risk fund")
        if order.get("state_description") == "MCH_COMPLETE" and order["total_amount"] != total:
            raise Refused(400, "INVALID_REQUEST", "completed already with another total_amount")
        first = order.get("state_description") != "MCH_COMPLETE"
        order.update(state_description="MCH_COMPLETE", total_amount=total, post_payments=body.get("post_payments"))
        if first and self.auto_collect:
            threading.Thread(target=self._collect_and_notify, args=(order["out_order_no"],), daemon=True).start()
        return 200, self.public_service_order(order)

    def _collect_and_notify(self, out_order_no: str) -> None:
        time.sleep(0.2)
        headers, body = self.payscore_collect(out_order_no)
        self.deliver(self.service_orders[out_order_no]["notify_url"], headers, body, tries=5)

    def _payscore_create(self, body: dict):
        no = body.get("out_order_no")
        if not isinstance(no, str) or not OUT_TRADE_NO_RE.match(no):
            raise Refused(400, "PARAM_ERROR", "out_order_no must be 6 to 32 letters, digits, _-|*")
        risk = body.get("risk_fund") or {}
        if risk.get("name") not in ("DEPOSIT", "ADVANCE", "CASH_DEPOSIT", "ESTIMATE_ORDER_COST") or \
                not isinstance(risk.get("amount"), int) or risk["amount"] <= 0:
            raise Refused(400, "PARAM_ERROR", "risk_fund needs a name and an amount in fen")
        if not body.get("service_introduction") or len(body["service_introduction"]) > 20:
            raise Refused(400, "PARAM_ERROR", "service_introduction is 1 to 20 characters")
        if not body.get("need_user_confirm", True):
            raise Refused(403, "NO_AUTH", "this fake merchant may only create orders the user confirms")
        fingerprint = (risk["amount"], body["service_introduction"], body.get("attach", ""))
        order = self.service_orders.get(no)
        if order is not None:
            if order["fingerprint"] != fingerprint:
                raise Refused(400, "INVALID_REQUEST", "out_order_no was used with other parameters")
            return 200, self.public_service_order(order)
        self.service_orders[no] = order = {
            "appid": body["appid"], "mchid": self.keys.mchid, "service_id": self.service_id, "out_order_no": no,
            "service_introduction": body["service_introduction"], "state": "CREATED", "state_description": "",
            "risk_fund": risk, "time_range": body.get("time_range"), "attach": body.get("attach", ""),
            "notify_url": body.get("notify_url", ""), "order_id": "1000000000" + secrets.token_hex(8),
            "package": "DJIOSQPYWDxsa" + secrets.token_hex(16), "fingerprint": fingerprint, "total_amount": 0}
        return 200, self.public_service_order(order)

    @staticmethod
    def public_service_order(order: dict) -> dict:
        return {k: v for k, v in order.items() if k not in ("fingerprint", "notify_url", "post_payments")}

    def payscore_confirm(self, out_order_no: str, openid: str = "") -> tuple[dict, bytes]:
        """The user confirms the service order in WeChat: (headers, body) of PAYSCORE.USER_CONFIRM."""
        openid = openid or self.new_user()
        with self.lock:
            order = self.service_orders[out_order_no]
            order.update(state="DOING", state_description="USER_CONFIRM", openid=openid)
            self.users.add(openid)
            resource = self.public_service_order(order)
        return self._payscore_notification("PAYSCORE.USER_CONFIRM", resource)

    def payscore_collect(self, out_order_no: str) -> tuple[dict, bytes]:
        """WeChat Pay takes a completed order's amount: (headers, body) of PAYSCORE.USER_PAID. The payment is
        a trade of its own (named by the out_order_no here), in the bill and refundable."""
        with self.lock:
            order = self.service_orders[out_order_no]
            if order.get("state_description") != "MCH_COMPLETE":
                raise Refused(400, "INVALID_REQUEST", "not completed")
            total = order["total_amount"]
            transaction_id = "42000" + "".join(secrets.choice(string.digits) for _ in range(23))
            now = datetime.now(BEIJING).isoformat(timespec="seconds")
            order.update(state="DONE", collection={"state": "USER_PAID", "total_amount": total, "paying_amount": 0,
                                                   "paid_amount": total, "details": [{
                                                       "seq": 1, "amount": total, "paid_type": "NEWTON",
                                                       "paid_time": now, "transaction_id": transaction_id}]})
            self.trades[out_order_no] = {
                "appid": order["appid"], "mchid": order["mchid"], "out_trade_no": out_order_no,
                "trade_type": "PAYSCORE", "trade_state": "SUCCESS", "trade_state_desc": "支付成功",
                "attach": order["attach"], "description": order["service_introduction"], "openid": order["openid"],
                "time_expire": "", "notify_url": order["notify_url"], "amount": {"total": total, "currency": "CNY"},
                "prepay_id": "", "fingerprint": None, "refunded": 0, "transaction_id": transaction_id,
                "bank_type": "OTHERS", "success_time": now}
            resource = self.public_service_order(order)
        return self._payscore_notification("PAYSCORE.USER_PAID", resource)

    def _payscore_notification(self, event_type: str, resource: dict) -> tuple[dict, bytes]:
        body = json.dumps({
            "id": secrets.token_hex(18), "create_time": datetime.now(BEIJING).isoformat(timespec="seconds"),
            "resource_type": "encrypt-resource", "event_type": event_type, "summary": "支付分",
            "resource": {"original_type": "payscore",
                         **aead_encrypt(self.keys.apiv3_key, json.dumps(resource, ensure_ascii=False), "payscore")}},
            ensure_ascii=False)
        return self.signed_headers(body), body.encode()

    def check_business_view(self, q: dict) -> dict:
        """The service order an ``openBusinessView('wxpayScoreUse', ...)`` names, if its sign (HMAC-SHA256
        under the API v3 key, over the sorted fields) is the merchant's."""
        fields = {k: q.get(k, "") for k in ("mch_id", "package", "timestamp", "nonce_str", "sign_type")}
        text = "&".join(f"{k}={fields[k]}" for k in sorted(fields)) + "&key=" + self.keys.apiv3_key
        sign = hmac.new(self.keys.apiv3_key.encode(), text.encode(), hashlib.sha256).hexdigest().upper()
        if fields["mch_id"] != self.keys.mchid or fields["sign_type"] != "HMAC-SHA256" or \
                not hmac.compare_digest(sign, q.get("sign", "")):
            raise Refused(400, "SIGN_ERROR", "sign does not verify")
        order = next((o for o in self.service_orders.values() if o["package"] == fields["package"]), None)
        if order is None:
            raise Refused(400, "PARAM_ERROR", "no such package")
        return order
