"""WeChat Pay API v3 through its Python library (``wechatpayv3``), and WeChat's web OAuth.

The library signs every request with the merchant's API key (``Authorization: WECHATPAY2-SHA256-RSA2048``),
checks every answer's platform signature, fetches and decrypts the platform certificates, and verifies and
decrypts notifications (``callback``). What it does not do, this module adds: a gateway taken from the
settings (the library hard-codes ``https://api.mch.weixin.qq.com``; a test points it at a local fake), the
errors a worker needs (``Unreachable``: try again later under the same out_trade_no; ``Refused``: WeChat Pay's
final word), the freshness of a notification (the library checks its signature, not its age), the bill's
SHA-1, and the OAuth ``snsapi_base`` exchange of a code for the customer's openid (plain HTTPS GETs; the
library has no call for it).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import secrets
import string
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import requests
from wechatpayv3 import SignType, WeChatPay, WeChatPayType
from wechatpayv3.core import Core

log = logging.getLogger(__name__)

GATEWAY = "https://api.mch.weixin.qq.com"
OAUTH_URL = "https://open.weixin.qq.com/connect/oauth2/authorize"
TOKEN_URL = "https://api.weixin.qq.com/sns/oauth2/access_token"


class Unreachable(RuntimeError):
    """No answer that can be trusted: a timeout, a connection error, a 5xx or 429, an unsigned answer."""


class Refused(RuntimeError):
    """WeChat Pay answered no (4xx): ``code`` is its error code (PARAM_ERROR, ORDER_NOT_EXIST, ...)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.status, self.code = status, code


class NotificationRefused(ValueError):
    """A notification that changes nothing: ``why`` is signature, stale or malformed."""

    def __init__(self, why: str, message: str):
        super().__init__(message)
        self.why = why


@dataclass(frozen=True)
class Credentials:
    """What the merchant's account is: ids and the secrets read from their files (never logged)."""

    mchid: str
    appid: str
    cert_serial: str
    private_key: str  # PEM of the merchant API certificate's key
    apiv3_key: str
    app_secret: str  # the official account's AppSecret, for OAuth
    public_key: str = ""  # WeChat Pay's platform public key (public-key mode), instead of certificates
    public_key_id: str = ""

    def __repr__(self) -> str:
        return f"Credentials(mchid={self.mchid!r}, appid={self.appid!r}, cert_serial={self.cert_serial!r})"


class _Core(Core):
    """The library's core with the gateway set before it fetches the platform certificates."""

    gateway = GATEWAY

    def _init_certificates(self):
        self._gate_way = self.gateway
        super()._init_certificates()


class _WeChatPay(WeChatPay):
    """``WeChatPay`` built on ``_Core``: its ``__init__`` would fetch certificates from the real gateway."""

    def __init__(self, gateway: str, creds: Credentials, notify_url: str, timeout):
        core = type("Core", (_Core,), {"gateway": gateway})
        self._type = WeChatPayType.JSAPI
        self._mchid, self._appid, self._notify_url = creds.mchid, creds.appid, notify_url
        self._partner_mode = False
        self._core = core(mchid=creds.mchid, cert_serial_no=creds.cert_serial, private_key=creds.private_key,
                          apiv3_key=creds.apiv3_key, timeout=timeout, public_key=creds.public_key or None,
                          public_key_id=creds.public_key_id or None)
        self._core._gate_way = gateway


def nonce(n: int = 32) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


class WeChatClient:
    """The calls the cloud makes. The library is built on first use (it fetches the platform certificates
    then), so a cloud whose WeChat Pay is down still starts; ``Unreachable`` until it answers."""

    def __init__(self, creds: Credentials, notify_url: str, gateway: str = GATEWAY, oauth_url: str = OAUTH_URL,
                 token_url: str = TOKEN_URL, timeout_s: float = 10.0, tolerance_s: float = 300.0):
        self.creds = creds
        self.notify_url = notify_url
        self.gateway = gateway.rstrip("/")
        self.oauth_url, self.token_url = oauth_url, token_url
        self.timeout_s = timeout_s
        self.tolerance_s = tolerance_s
        self._pay: _WeChatPay | None = None
        self._lock = threading.Lock()

    @property
    def pay(self) -> _WeChatPay:
        with self._lock:
            if self._pay is None:
                try:
                    self._pay = _WeChatPay(self.gateway, self.creds, self.notify_url,
                                           (self.timeout_s, self.timeout_s))
                except requests.RequestException as e:
                    raise Unreachable(f"WeChat Pay's certificates: {type(e).__name__}") from None
                except Exception as e:  # the library raises a bare Exception when no certificate came
                    raise Unreachable(f"WeChat Pay's certificates: {e}") from None
            return self._pay

    def _call(self, what: str, fn, *args, **kwargs) -> tuple[int, object]:
        try:
            code, body = fn(*args, **kwargs)
        except Unreachable:
            raise
        except requests.RequestException as e:
            raise Unreachable(f"{what}: {type(e).__name__}") from None
        except Exception as e:  # the library's "failed to verify the signature" is a bare Exception
            raise Unreachable(f"{what}: {e}") from None
        if code >= 500 or code == 429:
            raise Unreachable(f"{what}: WeChat Pay answered {code}")
        if code >= 400:
            try:
                err = json.loads(body)
            except (TypeError, ValueError):
                err = {}
            raise Refused(code, str(err.get("code", code)), str(err.get("message", ""))[:200])
        if isinstance(body, str):
            try:
                return code, json.loads(body) if body else {}
            except ValueError:
                raise Unreachable(f"{what}: the answer is not JSON") from None
        return code, body

    # -- JSAPI payments --------------------------------------------------------------------------------

    def jsapi(self, out_trade_no: str, description: str, total: int, openid: str, attach: str = "",
              time_expire: str | None = None) -> str:
        """Place a JSAPI order; its prepay_id. The same out_trade_no with the same parameters gives the same
        prepay_id (WeChat Pay's own idempotency), so a retry after a lost answer is safe."""
        _, body = self._call("jsapi", self.pay.pay, description=description[:127], out_trade_no=out_trade_no,
                             amount={"total": total, "currency": "CNY"}, payer={"openid": openid},
                             attach=attach or None, time_expire=time_expire, pay_type=WeChatPayType.JSAPI)
        prepay_id = body.get("prepay_id") if isinstance(body, dict) else None
        if not prepay_id:
            raise Unreachable("jsapi: the answer has no prepay_id")
        return prepay_id

    def query(self, out_trade_no: str) -> dict | None:
        """The trade as WeChat Pay knows it; None if it has none by that number."""
        try:
            return self._call("query", self.pay.query, out_trade_no=out_trade_no)[1]
        except Refused as e:
            if e.code == "ORDER_NOT_EXIST":
                return None
            raise

    def close(self, out_trade_no: str) -> None:
        """Close an unpaid trade (it can then never be paid)."""
        self._call("close", self.pay.close, out_trade_no=out_trade_no)

    def refund(self, out_refund_no: str, out_trade_no: str, refund: int, total: int, reason: str = "",
               transaction_id: str = "") -> dict:
        """Refund ``refund`` fen of a paid trade of ``total`` (named by WeChat Pay's transaction_id where there
        is one: a Pay Score payment has no out_trade_no of ours); the same out_refund_no again is the same
        refund."""
        return self._call("refund", self.pay.refund, out_refund_no=out_refund_no,
                          transaction_id=transaction_id or None, out_trade_no=out_trade_no,
                          amount={"refund": refund, "total": total, "currency": "CNY"},
                          reason=reason[:80] or None)[1]

    # -- WeChat Pay Score ------------------------------------------------------------------------------

    def service_order(self, out_order_no: str, service_id: str, introduction: str, amount: int,
                      attach: str = "") -> dict:
        """Open a Pay Score service order the customer confirms in WeChat (nothing is taken now); the same
        out_order_no with the same parameters is the same order."""
        return self._call("payscore_create", self.pay.payscore_create, out_order_no=out_order_no,
                          service_id=service_id, service_introduction=introduction[:20],
                          time_range={"start_time": "OnAccept"},
                          risk_fund={"name": "ESTIMATE_ORDER_COST", "amount": amount}, attach=attach or None,
                          need_user_confirm=True)[1]

    def query_service_order(self, out_order_no: str, service_id: str) -> dict | None:
        try:
            return self._call("payscore_query", self.pay.payscore_query, service_id=service_id,
                              out_order_no=out_order_no)[1]
        except Refused as e:
            if e.code == "ORDER_NOT_EXIST":
                return None
            raise

    def complete_service_order(self, out_order_no: str, service_id: str, name: str, amount: int) -> dict:
        """The service is done: WeChat Pay takes ``amount`` (at most what the customer confirmed)."""
        return self._call("payscore_complete", self.pay.payscore_complete, out_order_no=out_order_no,
                          service_id=service_id, post_payments=[{"name": name[:20], "amount": amount, "count": 1}],
                          total_amount=amount)[1]

    def cancel_service_order(self, out_order_no: str, service_id: str, reason: str) -> dict:
        return self._call("payscore_cancel", self.pay.payscore_cancel, out_order_no=out_order_no,
                          service_id=service_id, reason=reason[:30])[1]

    def business_view_params(self, package: str) -> dict:
        """The query of ``openBusinessView('wxpayScoreUse', ...)``, signed with HMAC-SHA256 under the API v3
        key (the library's ``sign``), for the customer to confirm a service order."""
        fields = {"mch_id": self.creds.mchid, "package": package, "timestamp": str(int(time.time())),
                  "nonce_str": nonce(), "sign_type": "HMAC-SHA256"}
        return {**fields, "sign": self.pay.sign(fields, SignType.HMAC_SHA256)}

    def query_refund(self, out_refund_no: str) -> dict | None:
        try:
            return self._call("query_refund", self.pay.query_refund, out_refund_no=out_refund_no)[1]
        except Refused as e:
            if e.code in ("RESOURCE_NOT_EXISTS", "ORDER_NOT_EXIST"):
                return None
            raise

    def trade_bill(self, bill_date: str) -> bytes:
        """The day's trade bill (all trades and refunds), its SHA-1 checked against what WeChat Pay said."""
        _, info = self._call("tradebill", self.pay.trade_bill, bill_date=bill_date, bill_type="ALL",
                             tar_type="GZIP")
        _, data = self._call("billdownload", self.pay.download_bill, url=info["download_url"])
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise Unreachable(f"billdownload: not a gzip file ({e})") from None
        if info.get("hash_type") == "SHA1" and hashlib.sha1(data).hexdigest() != info.get("hash_value"):
            raise Unreachable("billdownload: the file's SHA-1 is not the one WeChat Pay gave")
        return data

    def pay_params(self, prepay_id: str) -> dict:
        """The parameters of ``WeixinJSBridge.invoke('getBrandWCPayRequest', ...)``, signed (RSA) with the
        merchant key: appId, timeStamp, nonceStr, package and paySign."""
        ts, n, package = str(int(time.time())), nonce(), f"prepay_id={prepay_id}"
        sign = self.pay.sign([self.creds.appid, ts, n, package])
        return {"appId": self.creds.appid, "timeStamp": ts, "nonceStr": n, "package": package, "signType": "RSA",
                "paySign": sign}

    # -- notifications ---------------------------------------------------------------------------------

    def notification(self, headers, body: bytes, now: float) -> dict:
        """A notification's decrypted resource with its envelope (id, event_type), once its platform
        signature is checked (the library) and its timestamp is fresh; raises NotificationRefused."""
        ts = headers.get("Wechatpay-Timestamp") or ""
        if not ts.isdigit() or len(ts) > 12:
            raise NotificationRefused("signature", "no valid Wechatpay-Timestamp header")
        try:
            data = self.pay.callback(headers, body)
        except Unreachable:
            raise
        except requests.RequestException as e:  # an unknown serial makes the library fetch certificates
            raise Unreachable(f"certificates: {type(e).__name__}") from None
        except Exception as e:  # the library raises bare Exceptions for an unknown algorithm
            raise NotificationRefused("signature", f"not a WeChat Pay notification: {e}") from None
        if not data:
            raise NotificationRefused("signature", "the platform signature does not verify, or the resource "
                                                   "does not decrypt with the API v3 key")
        age = now - int(ts)
        if abs(age) > self.tolerance_s:
            raise NotificationRefused("stale", f"the notification is {age:.0f} s old; more than "
                                               f"{self.tolerance_s:.0f} s is refused")
        if not isinstance(data.get("resource"), dict) or not isinstance(data.get("id"), str):
            raise NotificationRefused("malformed", "the notification has no id or resource")
        return data

    # -- OAuth (snsapi_base) ---------------------------------------------------------------------------

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        return (f"{self.oauth_url}?" + urlencode({"appid": self.creds.appid, "redirect_uri": redirect_uri,
                                                   "response_type": "code", "scope": "snsapi_base",
                                                   "state": state}) + "#wechat_redirect")

    def openid(self, code: str) -> str:
        """The openid of the WeChat user who was given ``code``; Refused for a bad or used code."""
        try:
            r = requests.get(self.token_url, params={"appid": self.creds.appid, "secret": self.creds.app_secret,
                                                     "code": code, "grant_type": "authorization_code"},
                             timeout=self.timeout_s)
        except requests.RequestException as e:
            raise Unreachable(f"oauth: {type(e).__name__}") from None
        if r.status_code >= 500:
            raise Unreachable(f"oauth: WeChat answered {r.status_code}")
        try:
            body = r.json()
        except ValueError:
            raise Unreachable("oauth: the answer is not JSON") from None
        if body.get("errcode"):
            raise Refused(r.status_code, str(body["errcode"]), str(body.get("errmsg", ""))[:200])
        openid = body.get("openid")
        if not isinstance(openid, str) or not 1 <= len(openid) <= 128:
            raise Refused(r.status_code, "no_openid", "the answer names no openid")
        return openid
