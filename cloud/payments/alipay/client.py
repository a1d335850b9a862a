"""Alipay's open API through its Python library (``python-alipay-sdk``, module ``alipay``, RSA2): the calls this
provider makes, their answers read, and Alipay's signed notifications and returns checked.

The library signs each request with the app's private key and checks each answer's signature with Alipay's
public key; it keeps the gateway in ``AliPay._gateway`` (production, or the sandbox with ``debug=True``), which
this client sets to the configured ``--alipay-gateway`` so the same code reaches Alipay, Alipay's own sandbox
or the project's local fake (``tests/fakes/alipay.py``).

Amounts cross this module as integers in fen; Alipay's yuan strings ("12.34") are made and read here by
text, never through a float.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import urllib.error
from dataclasses import dataclass, field

# Absolute: the library, never this package (cloud.payments.alipay), which is only reachable by its full name.
from alipay import AliPay
from alipay.exceptions import AliPayException, AliPayValidationError
from alipay.utils import AliPayConfig
from Cryptodome.PublicKey import RSA

log = logging.getLogger(__name__)

PRODUCTION = "https://openapi.alipay.com/gateway.do"
SANDBOX = "https://openapi-sandbox.dl.alipaydev.com/gateway.do"
PRODUCT = "GENERAL_WITHHOLDING"  # the merchant's product for charging under an agreement (商户代扣)
PERSONAL_PRODUCT = "GENERAL_WITHHOLDING_P"  # the customer's side of it, on the agreement page
ORDER_RE = re.compile(r"[A-Za-z0-9]{1,40}\Z")
YUAN_RE = re.compile(r"(-?)([0-9]{1,12})\.([0-9]{2})\Z")


class Unreachable(RuntimeError):
    """No answer to trust: a timeout, a connection error, a 5xx, or an answer whose signature failed."""


class Refused(ValueError):
    """Alipay refused the request itself (code 40001/40002: a bad signature, app id, argument): a final
    ``failed``, and a configuration to fix, not a customer's decline."""


class NotificationRefused(ValueError):
    """A notification or return that changes nothing; ``why``: signature, merchant or malformed."""

    def __init__(self, why: str, message: str):
        super().__init__(message)
        self.why = why


@dataclass(frozen=True)
class Answer:
    """One verified answer: ``code`` 10000 is success, 40004 a business failure named by ``sub_code``."""

    code: str
    sub_code: str = ""
    sub_msg: str = ""
    body: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code == "10000"

    @property
    def reason(self) -> str:
        return f"{self.sub_code}: {self.sub_msg}"[:200] if self.sub_code else f"code {self.code}"


def yuan(fen: int) -> str:
    """1234 -> '12.34', the way Alipay writes an amount."""
    if not isinstance(fen, int) or isinstance(fen, bool) or fen < 0:
        raise ValueError(f"an amount in fen must be a whole number of at least 0, not {fen!r}")
    return f"{fen // 100}.{fen % 100:02d}"


def fen(text: str) -> int:
    """'12.34' -> 1234 and '-0.06' -> -6, exactly (by text); ValueError for anything but yuan with two decimals."""
    match = YUAN_RE.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not an amount in yuan with two decimals")
    sign, major, minor = match.groups()
    value = int(major) * 100 + int(minor)
    return -value if sign else value


def out_trade_no(order_id: str, key: str) -> str:
    """The merchant's trade number for one op: the order id, then a digest of the op's key (so a retry under the
    key is the same trade at Alipay, and another key another trade); letters, digits and _ only, 64 at most."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{order_id}_{digest}" if ORDER_RE.match(order_id) else f"x_{hashlib.sha256(order_id.encode()).hexdigest()[:24]}_{digest}"


def order_of(trade_no: str) -> str | None:
    """The order id an ``out_trade_no`` was made from, where it carries one."""
    head, sep, tail = trade_no.rpartition("_")
    return head if sep and ORDER_RE.match(head) and len(tail) == 16 else None


def request_no(key: str) -> str:
    """A refund's ``out_request_no`` from its op key (at most 64 letters and digits)."""
    return "r" + hashlib.sha256(key.encode()).hexdigest()[:32]


def load_key(data: bytes, private: bool, name: str) -> str | bytes:
    """A key as the library takes it: PEM as is, or the bare base64 Alipay's key tool writes (DER inside);
    ValueError naming ``name`` when it is neither."""
    text = data.strip()
    if b"-----BEGIN" in text:
        key = text.decode("ascii", "replace")
    else:
        try:
            key = base64.b64decode(b"".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{name} is neither a PEM key nor the bare base64 Alipay's key tool writes") from None
    try:
        parsed = RSA.importKey(key)
    except (ValueError, IndexError, TypeError):
        raise ValueError(f"{name} is not an RSA key") from None
    if parsed.has_private() != private:
        raise ValueError(f"{name} must hold {'a private' if private else 'a public'} key")
    return key


class AlipayClient:
    """The calls to Alipay this provider makes, each one request, outside any transaction."""

    def __init__(self, app_id: str, app_private_key: bytes, alipay_public_key: bytes, gateway: str = PRODUCTION,
                 timeout_s: float = 10.0, notify_url: str = ""):
        self.app_id = app_id
        self.gateway = gateway
        self.notify_url = notify_url
        self.api = AliPay(app_id, app_private_key_string=load_key(app_private_key, True, "the app's private key"),
                          alipay_public_key_string=load_key(alipay_public_key, False, "Alipay's public key"),
                          sign_type="RSA2", config=AliPayConfig(timeout=timeout_s))
        self.api._gateway = gateway  # where the library sends requests and builds page URLs (see the docstring)

    def call(self, method: str, biz: dict, **params: str) -> Answer:
        """One signed request; the verified answer. Raises Unreachable (retry later, under the same numbers) or
        Refused (the request itself is wrong)."""
        try:
            body = self.api.server_api(method, biz, **params)
        except AliPayValidationError:
            raise Unreachable(f"{method}: the answer's signature does not verify with Alipay's public key") from None
        except AliPayException as e:  # an unsigned error_response: the request was refused as it stands
            raise Refused(f"{method} refused: {str(e)[-300:]}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            raise Unreachable(f"{method}: {type(e).__name__} {e}"[:300]) from None
        except ValueError as e:  # a 200 that is not JSON: a proxy's page, not Alipay's answer
            raise Unreachable(f"{method}: the answer is not Alipay's JSON ({e})"[:300]) from None
        if not isinstance(body, dict) or "code" not in body:
            raise Unreachable(f"{method}: an answer without a code")
        return Answer(str(body["code"]), str(body.get("sub_code", "")), str(body.get("sub_msg", "")), body)

    # -- the agreement ------------------------------------------------------------------------------------------

    def agreement_page(self, external_agreement_no: str, return_url: str, notify_url: str = "",
                       sign_scene: str = "INDUSTRY|DIGITAL_MEDIA") -> str:
        """The URL of Alipay's page where the customer signs the withholding agreement."""
        biz = {"personal_product_code": PERSONAL_PRODUCT, "product_code": PRODUCT, "sign_scene": sign_scene,
               "external_agreement_no": external_agreement_no, "access_params": {"channel": "ALIPAYAPP"}}
        query = self.api.client_api("alipay.user.agreement.page.sign", biz, return_url=return_url,
                                    notify_url=notify_url or self.notify_url)
        return self.gateway + "?" + query

    def agreement_status(self, agreement_no: str) -> str:
        """NORMAL, TEMP, STOP, UNSIGN, or NOT_EXIST."""
        answer = self.call("alipay.user.agreement.query",
                           {"agreement_no": agreement_no, "personal_product_code": PERSONAL_PRODUCT})
        if not answer.ok:
            return "NOT_EXIST" if "NOT_EXIST" in answer.sub_code else answer.sub_code or answer.code
        return str(answer.body.get("status", ""))

    # -- trades -------------------------------------------------------------------------------------------------

    def pay(self, trade_no: str, amount: int, subject: str, agreement_no: str) -> Answer:
        """Charge ``amount`` fen under the agreement (alipay.trade.pay, GENERAL_WITHHOLDING); final at once."""
        return self.call("alipay.trade.pay", {
            "out_trade_no": trade_no, "total_amount": yuan(amount), "subject": subject[:256],
            "product_code": PRODUCT, "agreement_params": {"agreement_no": agreement_no}},
            notify_url=self.notify_url)

    def query(self, trade_no: str) -> Answer:
        return self.call("alipay.trade.query", {"out_trade_no": trade_no})

    def refund(self, amount: int, refund_no: str, trade_no: str = "", out_trade_no: str = "") -> Answer:
        """Give back ``amount`` fen of the trade (by Alipay's ``trade_no`` or our ``out_trade_no``) under
        ``refund_no``: Alipay moves money once per request number."""
        biz = {"refund_amount": yuan(amount), "out_request_no": refund_no}
        biz.update({"trade_no": trade_no} if trade_no else {"out_trade_no": out_trade_no})
        return self.call("alipay.trade.refund", biz)

    def refund_query(self, refund_no: str, trade_no: str = "", out_trade_no: str = "") -> Answer:
        """A refund request as Alipay knows it: ``refund_amount`` in the answer when it was made."""
        biz = {"out_request_no": refund_no}
        biz.update({"trade_no": trade_no} if trade_no else {"out_trade_no": out_trade_no})
        return self.call("alipay.trade.fastpay.refund.query", biz)

    def bill_url(self, day: str) -> Answer:
        """Where the trade bill of ``day`` (YYYY-MM-DD) can be downloaded (a zip of GBK CSV files)."""
        return self.call("alipay.data.dataservice.bill.downloadurl.query", {"bill_type": "trade", "bill_date": day})

    # -- what Alipay sends us -----------------------------------------------------------------------------------

    def verified(self, form: dict[str, str]) -> dict[str, str]:
        """An asynchronous notification's (or a return's) parameters, once the signature checks out with Alipay's
        public key and it names our app; raises NotificationRefused."""
        data = {str(k): str(v) for k, v in form.items()}
        sign = data.pop("sign", "")
        if not sign:
            raise NotificationRefused("signature", "no sign parameter")
        if data.get("sign_type", "RSA2") != "RSA2":
            raise NotificationRefused("signature", f"sign_type {data.get('sign_type')!r}: only RSA2 is accepted")
        try:
            good = self.api.verify(dict(data), sign)
        except (ValueError, TypeError, AliPayException):
            good = False
        if not good:
            raise NotificationRefused("signature", "the signature does not verify with Alipay's public key")
        if data.get("app_id") != self.app_id:
            raise NotificationRefused("merchant", f"app_id {data.get('app_id')!r} is not ours")
        data.pop("sign_type", None)
        return data


def describe(answer: Answer) -> str:
    """An answer for the log: its code and the fields that name things, never the whole body."""
    keep = {k: answer.body.get(k) for k in ("out_trade_no", "trade_no", "trade_status", "fund_change")
            if k in answer.body}
    return f"{answer.code} {answer.sub_code} {json.dumps(keep)}"
