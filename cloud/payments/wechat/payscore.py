"""WeChat Pay Score (支付分), for a merchant that has it (``--wechat-payscore-service-id``): pay after the drop.

At "Buy" a service order is opened (``/v3/payscore/serviceorder``, its risk fund the price: nothing is
taken); the customer confirms it in WeChat (``openBusinessView('wxpayScoreUse', ...)`` on the cloud's
page), which WeChat Pay tells by PAYSCORE.USER_CONFIRM: the authorisation. On the drop the order is
completed with the amount (``.../complete``) and WeChat Pay takes it (PAYSCORE.USER_PAID: the capture,
named by the payment's transaction_id); if nothing drops it is cancelled (``.../cancel``): no money ever
moved. Each function makes the request of one outbox row and gives the answer as the outbox records it.
"""

from __future__ import annotations

from cloud.payments.outbox import Sent
from cloud.payments.wechat import client as wx

MODE = "payscore"


def order_sent(found: dict, action_url: str) -> Sent | None:
    """A service order's state as an answer to its authorisation; None: WeChat Pay has not decided."""
    state, described = found.get("state"), found.get("state_description", "")
    ref = str(found.get("order_id", ""))
    if state == "CREATED":
        return Sent("pending", "", ref, {"package": found.get("package", ""), "action_url": action_url})
    if state == "DOING" or state == "DONE":
        return Sent("succeeded", "", ref)
    if state in ("REVOKED", "EXPIRED"):
        return Sent("declined", f"WeChat Pay Score: the service order is {state} {described}".strip())
    return None


def open_order(client: wx.WeChatClient, service_id: str, op, detail: dict, number: str, action_url: str) -> Sent:
    found = client.service_order(number, service_id, detail.get("description", "Vending"), op.amount,
                                 attach=op.order_id)
    return order_sent(found, action_url) or Sent("pending", "", str(found.get("order_id", "")))


def authorisation(client: wx.WeChatClient, service_id: str, number: str, action_url: str) -> Sent | None:
    found = client.query_service_order(number, service_id)
    return None if found is None else order_sent(found, action_url)


def collected(found: dict) -> Sent | None:
    """A completed order's collection as the capture's answer: succeeded once WeChat Pay took the money."""
    collection = found.get("collection") or {}
    if found.get("state") == "DONE" and collection.get("state") == "USER_PAID":
        details = collection.get("details") or [{}]
        return Sent("succeeded", "", str(details[-1].get("transaction_id", "")))
    if found.get("state") == "DOING" and found.get("state_description") == "MCH_COMPLETE":
        return Sent("pending", "completed; WeChat Pay is taking the amount")
    return None


def complete(client: wx.WeChatClient, service_id: str, op, detail: dict, number: str) -> Sent:
    found = client.complete_service_order(number, service_id, detail.get("description", "Vending"), op.amount)
    return collected(found) or Sent("failed", f"WeChat Pay Score: the service order is {found.get('state')}")


def capture(client: wx.WeChatClient, service_id: str, number: str) -> Sent | None:
    found = client.query_service_order(number, service_id)
    return None if found is None else collected(found)


def cancel(client: wx.WeChatClient, service_id: str, number: str) -> Sent:
    """Nothing dropped: the order is cancelled, and nothing was ever taken."""
    found = client.query_service_order(number, service_id)
    if found is None:
        return Sent("succeeded", "no service order was opened")
    if found.get("state") in ("REVOKED", "EXPIRED"):
        return Sent("succeeded", f"nothing was taken ({found['state']})")
    client.cancel_service_order(number, service_id, "not dropped")
    return Sent("succeeded", "cancelled: nothing was taken")
