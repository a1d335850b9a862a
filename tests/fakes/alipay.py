"""A local stand-in for Alipay's open platform (openapi.alipay.com/gateway.do), for tests and the browser story.

It follows Alipay's published formats, so the merchant side runs the real ``python-alipay-sdk`` against it:

- requests: the common parameters (``app_id``, ``method``, ``charset``, ``sign_type`` RSA2, ``timestamp``,
  ``version``, ``biz_content`` as JSON, optional ``notify_url``/``return_url``) by GET query or POST form,
  signed by the app's private key: RSA-SHA256 (PKCS#1 v1.5) over the parameters but ``sign``, sorted by name,
  joined as ``k=v`` with ``&``; checked here with the app's public key;
- answers: ``{"<method with _>_response": {...}, "sign": "..."}``, the signature over the response object's
  JSON text exactly as sent, made with Alipay's private key; ``code`` 10000 is success, 40004 a business
  failure (``sub_code`` says which), 40002 bad arguments (a bad signature answers ``error_response``, unsigned);
- asynchronous notifications: a form-encoded POST to the request's ``notify_url``, signed like a request
  (without ``sign`` and ``sign_type``) with Alipay's private key, sent again with backoff until the merchant
  answers the body ``success``;
- the withholding agreement page (``alipay.user.agreement.page.sign``) as a plain HTML form (Agree / Decline)
  a browser test clicks through; agreeing notifies ``dut_user_sign`` and sends the browser to the
  ``return_url`` with the agreement, signed;
- the trade bill (``alipay.data.dataservice.bill.downloadurl.query``): a zip of two GBK CSV files
  (业务明细 and its 汇总), ``#`` comment lines at the top and the bottom, as the merchant portal gives.

Only the methods this project uses are served: ``alipay.user.agreement.page.sign``,
``alipay.user.agreement.query``, ``alipay.trade.pay`` (GENERAL_WITHHOLDING with ``agreement_params``),
``alipay.trade.query``, ``alipay.trade.refund``, ``alipay.trade.fastpay.refund.query`` and
``alipay.data.dataservice.bill.downloadurl.query``. Faults to play (``fault``): ``slow`` (answer after a
delay, having done the work), ``lost`` (do the work, answer 502), ``down`` (answer 503, do nothing).

Run as a process: ``python -m tests.fakes.alipay --port N --keys DIR`` (DIR: ``app_public.pem``,
``alipay_private.pem``, written by ``write_keys``); control it over ``/_fake/...`` (see ``Handler``).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import secrets
import signal
import sys
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

log = logging.getLogger("alipay-fake")

CHINA = timezone(timedelta(hours=8))  # Alipay's times are Beijing time, without a zone
OK = {"code": "10000", "msg": "Success"}
FEE_PER_MILLE = 6  # the fake's service fee: 0.6 % of each trade, rounded half up to the fen


def new_keys() -> tuple[bytes, bytes]:
    """(private PEM, public PEM) of a fresh RSA-2048 key pair."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@dataclass
class Keys:
    """The two key pairs of one merchant app: the app's (it signs requests) and Alipay's (it signs answers)."""

    app_private: bytes
    app_public: bytes
    alipay_private: bytes
    alipay_public: bytes

    @classmethod
    def generate(cls) -> "Keys":
        return cls(*new_keys(), *new_keys())

    def write(self, folder: Path) -> dict[str, Path]:
        """Write the four files (mode 0600) and return their paths by name."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name in ("app_private", "app_public", "alipay_private", "alipay_public"):
            path = folder / f"{name}.pem"
            path.write_bytes(getattr(self, name))
            path.chmod(0o600)
            paths[name] = path
        return paths


def signing_string(params: dict[str, str], request: bool = False) -> str:
    """Alipay's string to sign: every non-empty parameter but ``sign`` (and, in a notification, ``sign_type``),
    sorted by name, ``k=v`` joined by &. A request's ``sign_type`` is signed; a notification's is not."""
    skip = ("sign",) if request else ("sign", "sign_type")
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in skip and v != "")


def rsa2_sign(private_pem: bytes, text: str) -> str:
    key = serialization.load_pem_private_key(private_pem, None)
    return base64.b64encode(key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa2_verify(public_pem: bytes, text: str, signature: str) -> bool:
    key = serialization.load_pem_public_key(public_pem)
    try:
        key.verify(base64.b64decode(signature), text.encode(), padding.PKCS1v15(), hashes.SHA256())
        return True
    except Exception:  # a bad signature, or one that is not base64 at all
        return False


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def fen(text: str) -> int:
    major, _, minor = str(text).partition(".")
    if not major.isdigit() or len(minor) > 2 or (minor and not minor.isdigit()):
        raise ValueError(f"{text!r} is not an amount in yuan")
    return int(major) * 100 + int(minor.ljust(2, "0") or 0)


def china_time(t: float) -> str:
    return datetime.fromtimestamp(t, CHINA).strftime("%Y-%m-%d %H:%M:%S")


class Business(Exception):
    """A business failure: code 40004 with a sub_code (or 40002 for bad arguments)."""

    def __init__(self, sub_code: str, sub_msg: str, code: str = "40004"):
        super().__init__(sub_msg)
        self.code, self.sub_code, self.sub_msg = code, sub_code, sub_msg


@dataclass
class Notice:
    """One asynchronous notification, with each delivery's answer."""

    url: str
    params: dict[str, str]
    answers: list[str] = field(default_factory=list)
    delivered: bool = False

    @property
    def body(self) -> bytes:
        return urllib.parse.urlencode(self.params).encode()


class AlipayFake:
    """Alipay's books for one merchant app and the HTTP server that serves them."""

    def __init__(self, keys: Keys, app_id: str = "2021000000000001", pid: str = "2088000000000001",
                 account: str = "merchant@example.com", notify_tries: int = 6, clock=time.time):
        self.keys, self.app_id, self.pid, self.account = keys, app_id, pid, account
        self.notify_tries = notify_tries
        self.clock = clock
        self.lock = threading.RLock()
        self.agreements: dict[str, dict] = {}  # agreement_no -> agreement
        self.sign_pages: dict[str, dict] = {}  # page token -> the sign request
        self.trades: dict[str, dict] = {}  # out_trade_no -> trade
        self.refunds: dict[tuple[str, str], dict] = {}  # (out_trade_no, out_request_no) -> refund
        self.bills: dict[str, bytes] = {}
        self.notices: list[Notice] = []
        self.requests: list[tuple[str, dict]] = []  # (method, biz_content) of every signed request
        self.faults: list[tuple[str, str, float]] = []  # (method or "*", kind, seconds)
        self.decline: dict[str, str] = {}  # agreement_no -> sub_code its next payments get
        self.server: ThreadingHTTPServer | None = None
        self.url = ""

    # -- running ------------------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.server = ThreadingHTTPServer((host, port), make_handler(self))
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, name="alipay-fake", daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def gateway(self) -> str:
        return self.url + "/gateway.do"

    def fault(self, kind: str, method: str = "*", seconds: float = 0.0, times: int = 1) -> None:
        """The next ``times`` requests for ``method`` meet ``kind``: slow, lost or down."""
        assert kind in ("slow", "lost", "down"), kind
        with self.lock:
            self.faults.extend([(method, kind, seconds)] * times)

    def _take_fault(self, method: str) -> tuple[str, float] | None:
        with self.lock:
            for i, (m, kind, seconds) in enumerate(self.faults):
                if m in ("*", method):
                    del self.faults[i]
                    return kind, seconds
        return None

    # -- signed answers and notifications -----------------------------------------------------------------

    def answer(self, method: str, body: dict) -> bytes:
        inner = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        sign = rsa2_sign(self.keys.alipay_private, inner)
        rtype = method.replace(".", "_") + "_response"
        return ('{"' + rtype + '":' + inner + ',"sign":"' + sign + '"}').encode()

    def signed(self, params: dict[str, str]) -> dict[str, str]:
        params = {k: v for k, v in params.items() if v != ""}
        params["sign_type"] = "RSA2"
        params["sign"] = rsa2_sign(self.keys.alipay_private, signing_string(params))
        return params

    def notify(self, url: str, params: dict[str, str]) -> Notice | None:
        """Send a signed notification to ``url`` in the background, again until it answers ``success``."""
        if not url:
            return None
        notice = Notice(url, self.signed({"notify_id": secrets.token_hex(16), "notify_time": china_time(self.clock()),
                                          "charset": "utf-8", "version": "1.0", "app_id": self.app_id, **params}))
        with self.lock:
            self.notices.append(notice)
        threading.Thread(target=self.deliver, args=(notice,), daemon=True).start()
        return notice

    def deliver(self, notice: Notice) -> None:
        for attempt in range(self.notify_tries):
            if attempt:
                time.sleep(min(0.2 * 2 ** attempt, 3.0))
            answer = self.post(notice.url, notice.body)
            notice.answers.append(answer)
            if answer == "success":
                notice.delivered = True
                return

    @staticmethod
    def post(url: str, body: bytes) -> str:
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.read().decode("utf-8", "replace").strip()
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code} {e.read()[:200].decode('utf-8', 'replace')}"
        except OSError as e:
            return f"error {e}"

    # -- the gateway ----------------------------------------------------------------------------------------

    def check(self, params: dict[str, str]) -> tuple[str, dict]:
        """The method and biz_content of a signed request; raises Business (40002) for a bad one."""
        for name in ("app_id", "method", "sign", "sign_type", "timestamp", "biz_content"):
            if not params.get(name):
                raise Business("isv.missing-" + name.replace("_", "-"), f"缺少参数 {name}", "40001")
        if params["app_id"] != self.app_id:
            raise Business("isv.invalid-app-id", "无效的AppID参数", "40002")
        if params["sign_type"] != "RSA2":
            raise Business("isv.invalid-signature-type", "无效的签名类型", "40002")
        if not rsa2_verify(self.keys.app_public, signing_string(params, request=True), params["sign"]):
            raise Business("isv.invalid-signature", "验签出错", "40002")
        try:
            biz = json.loads(params["biz_content"])
            assert isinstance(biz, dict)
        except (ValueError, AssertionError):
            raise Business("isv.invalid-parameter", "biz_content 不是 JSON 对象", "40002") from None
        return params["method"], biz

    def api(self, method: str, biz: dict, params: dict[str, str]) -> dict:
        handlers = {
            "alipay.user.agreement.query": self.agreement_query,
            "alipay.trade.pay": self.trade_pay,
            "alipay.trade.query": self.trade_query,
            "alipay.trade.refund": self.trade_refund,
            "alipay.trade.fastpay.refund.query": self.refund_query,
            "alipay.data.dataservice.bill.downloadurl.query": self.bill_url,
        }
        if method not in handlers:
            raise Business("isv.invalid-method", f"不存在的方法名 {method}", "40002")
        with self.lock:
            self.requests.append((method, biz))
            return {**OK, **handlers[method](biz, params)}

    # -- agreements -----------------------------------------------------------------------------------------

    def sign_page(self, biz: dict, params: dict[str, str]) -> str:
        """The agreement page's HTML for a verified alipay.user.agreement.page.sign request."""
        for name in ("personal_product_code", "external_agreement_no", "sign_scene"):
            if not biz.get(name):
                raise Business("isv.missing-" + name, f"缺少参数 {name}", "40002")
        ours = str(biz["external_agreement_no"])
        if len(ours) > 32 or not ours.isalnum() or not ours.isascii():
            raise Business("isv.invalid-external-agreement-no", "external_agreement_no 支持大小写字母和数字，最长32位",
                           "40002")
        token = secrets.token_urlsafe(12)
        with self.lock:
            self.sign_pages[token] = {"biz": biz, "return_url": params.get("return_url", ""),
                                      "notify_url": params.get("notify_url", "")}
        return PAGE.format(title="支付宝 · 免密支付协议 (Alipay withholding agreement)",
                           body=f"<p>Allow <b>{escape(self.account)}</b> to take payments from your Alipay account "
                           f"without asking each time.</p><p>Agreement {escape(biz['external_agreement_no'])}</p>"
                           f"<form method='post' action='/_pages/agreement/{token}'>"
                           f"<input name='login' value='buyer@example.com' aria-label='Alipay account'>"
                           f"<button name='choice' value='agree'>Agree and sign</button> "
                           f"<button name='choice' value='decline'>Decline</button></form>")

    def sign_agreement(self, token: str, agree: bool) -> str:
        """The customer's answer on the agreement page; returns where the browser goes next."""
        with self.lock:
            page = self.sign_pages.pop(token, None)
        if page is None:
            raise Business("PAGE_EXPIRED", "this agreement page was used already or never existed")
        if not agree:
            return page["return_url"] or ""
        biz, now = page["biz"], self.clock()
        agreement = {"agreement_no": "2026" + "".join(secrets.choice("0123456789") for _ in range(16)),
                     "external_agreement_no": biz["external_agreement_no"],
                     "personal_product_code": biz["personal_product_code"], "sign_scene": biz["sign_scene"],
                     "status": "NORMAL", "alipay_user_id": "2088" + secrets.token_hex(6)[:12].translate(
                         str.maketrans("abcdef", "123456")),
                     "sign_time": china_time(now), "valid_time": china_time(now),
                     "invalid_time": "2115-02-01 00:00:00", "notify_url": page["notify_url"]}
        with self.lock:
            self.agreements[agreement["agreement_no"]] = agreement
        fields = {k: agreement[k] for k in ("agreement_no", "external_agreement_no", "personal_product_code",
                                            "sign_scene", "status", "alipay_user_id", "sign_time", "valid_time",
                                            "invalid_time")}
        self.notify(page["notify_url"], {"notify_type": "dut_user_sign", **fields})
        if not page["return_url"]:
            return ""
        back = self.signed({"app_id": self.app_id, "charset": "utf-8", **fields})
        sep = "&" if "?" in page["return_url"] else "?"
        return page["return_url"] + sep + urllib.parse.urlencode(back)

    def unsign(self, agreement_no: str) -> Notice | None:
        """The customer ends the agreement in their Alipay app: status UNSIGN, ``dut_user_unsign`` notified."""
        with self.lock:
            agreement = self.agreements[agreement_no]
            agreement["status"] = "UNSIGN"
        return self.notify(agreement["notify_url"], {
            "notify_type": "dut_user_unsign", "agreement_no": agreement_no, "status": "UNSIGN",
            "external_agreement_no": agreement["external_agreement_no"],
            "personal_product_code": agreement["personal_product_code"],
            "alipay_user_id": agreement["alipay_user_id"], "unsign_time": china_time(self.clock())})

    def agreement_query(self, biz: dict, params) -> dict:
        agreement = self.agreements.get(str(biz.get("agreement_no", "")))
        if agreement is None and biz.get("external_agreement_no"):
            agreement = next((a for a in self.agreements.values()
                              if a["external_agreement_no"] == biz["external_agreement_no"]), None)
        if agreement is None:
            raise Business("USER_AGREEMENT_NOT_EXIST", "用户协议不存在")
        return {k: agreement[k] for k in ("agreement_no", "external_agreement_no", "personal_product_code",
                                          "sign_scene", "status", "sign_time", "valid_time", "invalid_time")} | {
            "principal_id": agreement["alipay_user_id"]}

    # -- trades ---------------------------------------------------------------------------------------------

    def trade_pay(self, biz: dict, params: dict[str, str]) -> dict:
        out_trade_no = str(biz.get("out_trade_no", ""))
        if not out_trade_no or len(out_trade_no) > 64 or not out_trade_no.replace("_", "").isalnum():
            raise Business("ACQ.INVALID_PARAMETER", "out_trade_no 只能由字母、数字、下划线组成, 64 位以内")
        if biz.get("product_code") != "GENERAL_WITHHOLDING":
            raise Business("ACQ.INVALID_PARAMETER", "本接口只接受 product_code GENERAL_WITHHOLDING")
        try:
            amount = fen(biz.get("total_amount", ""))
        except ValueError as e:
            raise Business("ACQ.INVALID_PARAMETER", str(e)) from None
        if not 1 <= amount <= 10_000_000_000:
            raise Business("ACQ.INVALID_PARAMETER", "total_amount 超出范围")
        if not biz.get("subject"):
            raise Business("ACQ.INVALID_PARAMETER", "缺少 subject")
        existing = self.trades.get(out_trade_no)
        if existing is not None:
            if existing["trade_status"] == "TRADE_SUCCESS":
                raise Business("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
            raise Business("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
        agreement_no = str((biz.get("agreement_params") or {}).get("agreement_no", ""))
        agreement = self.agreements.get(agreement_no)
        if agreement is None:
            raise Business("ACQ.AGREEMENT_NOT_EXIST", "协议不存在")
        if agreement["status"] != "NORMAL":
            raise Business("ACQ.AGREEMENT_STATUS_NOT_NORMAL", "协议状态非正常状态")
        if agreement_no in self.decline:
            raise Business(self.decline[agreement_no], "用户余额不足")
        now = self.clock()
        trade = {"trade_no": datetime.fromtimestamp(now, CHINA).strftime("%Y%m%d") + "2200"
                 + "".join(secrets.choice("0123456789") for _ in range(16)),
                 "out_trade_no": out_trade_no, "total_amount": yuan(amount), "amount": amount,
                 "subject": str(biz["subject"])[:256], "buyer_user_id": agreement["alipay_user_id"],
                 "trade_status": "TRADE_SUCCESS", "created": now, "paid": now, "refunded": 0,
                 "fee": (amount * FEE_PER_MILLE + 500) // 1000}
        self.trades[out_trade_no] = trade
        self.notify(params.get("notify_url", ""), {
            "notify_type": "trade_status_sync", "trade_no": trade["trade_no"], "out_trade_no": out_trade_no,
            "trade_status": "TRADE_SUCCESS", "total_amount": trade["total_amount"],
            "receipt_amount": trade["total_amount"], "buyer_id": trade["buyer_user_id"], "seller_id": self.pid,
            "gmt_create": china_time(now), "gmt_payment": china_time(now), "subject": trade["subject"]})
        return {"trade_no": trade["trade_no"], "out_trade_no": out_trade_no, "total_amount": trade["total_amount"],
                "receipt_amount": trade["total_amount"], "buyer_user_id": trade["buyer_user_id"],
                "gmt_payment": china_time(now)}

    def _trade(self, biz: dict) -> dict:
        trade = self.trades.get(str(biz.get("out_trade_no", "")))
        if trade is None and biz.get("trade_no"):
            trade = next((t for t in self.trades.values() if t["trade_no"] == biz["trade_no"]), None)
        if trade is None:
            raise Business("ACQ.TRADE_NOT_EXIST", "交易不存在")
        return trade

    def trade_query(self, biz: dict, params) -> dict:
        trade = self._trade(biz)
        return {k: trade[k] for k in ("trade_no", "out_trade_no", "trade_status", "total_amount", "buyer_user_id")} | {
            "send_pay_date": china_time(trade["paid"])}

    def trade_refund(self, biz: dict, params) -> dict:
        trade = self._trade(biz)
        request_no = str(biz.get("out_request_no") or trade["out_trade_no"])
        try:
            amount = fen(biz.get("refund_amount", ""))
        except ValueError as e:
            raise Business("ACQ.INVALID_PARAMETER", str(e)) from None
        key = (trade["out_trade_no"], request_no)
        done = {"trade_no": trade["trade_no"], "out_trade_no": trade["out_trade_no"],
                "buyer_user_id": trade["buyer_user_id"]}
        if key in self.refunds:  # the same request again: the first answer, no money moves
            if self.refunds[key]["amount"] != amount:
                raise Business("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "同一退款请求号的退款金额与原请求不一致")
            return done | {"fund_change": "N", "refund_fee": yuan(trade["refunded"])}
        if amount <= 0 or trade["refunded"] + amount > trade["amount"]:
            raise Business("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
        trade["refunded"] += amount
        fee_back = trade["fee"] * amount // trade["amount"]
        self.refunds[key] = {"out_trade_no": trade["out_trade_no"], "out_request_no": request_no, "amount": amount,
                             "at": self.clock(), "fee_back": fee_back}
        return done | {"fund_change": "Y", "refund_fee": yuan(trade["refunded"]),
                       "gmt_refund_pay": china_time(self.clock())}

    def refund_query(self, biz: dict, params) -> dict:
        trade = self._trade(biz)
        refund = self.refunds.get((trade["out_trade_no"], str(biz.get("out_request_no", ""))))
        if refund is None:
            return {"out_trade_no": trade["out_trade_no"], "trade_no": trade["trade_no"]}  # 10000, no refund_amount
        return {"out_trade_no": trade["out_trade_no"], "trade_no": trade["trade_no"],
                "out_request_no": refund["out_request_no"], "refund_amount": yuan(refund["amount"]),
                "total_amount": trade["total_amount"], "refund_status": "REFUND_SUCCESS"}

    # -- the bill -------------------------------------------------------------------------------------------

    def bill_url(self, biz: dict, params) -> dict:
        if biz.get("bill_type") != "trade":
            raise Business("isv.invalid-bill-type", "账单类型只支持 trade", "40002")
        try:
            day = datetime.strptime(str(biz.get("bill_date", "")), "%Y-%m-%d").date()
        except ValueError:
            raise Business("isv.invalid-bill-date", "账单日期格式为 yyyy-MM-dd", "40002") from None
        token = secrets.token_urlsafe(12)
        self.bills[token] = self.bill_zip(day)
        return {"bill_download_url": f"{self.url}/_bill/{token}.csv.zip"}

    def bill_rows(self, day) -> list[list[str]]:
        rows = []
        for trade in self.trades.values():
            if datetime.fromtimestamp(trade["paid"], CHINA).date() == day:
                rows.append([trade["trade_no"], trade["out_trade_no"], "交易", trade["subject"],
                             china_time(trade["created"]), china_time(trade["paid"]), "", "", "", "",
                             "buyer@example.com", yuan(trade["amount"]), yuan(trade["amount"]), "0.00", "0.00",
                             "0.00", "0.00", "0.00", "", "0.00", "0.00", "", "-" + yuan(trade["fee"]), "0.00", ""])
        for refund in self.refunds.values():
            trade = self.trades[refund["out_trade_no"]]
            if datetime.fromtimestamp(refund["at"], CHINA).date() == day:
                rows.append([trade["trade_no"], trade["out_trade_no"], "退款", trade["subject"],
                             china_time(trade["created"]), china_time(refund["at"]), "", "", "", "",
                             "buyer@example.com", yuan(trade["amount"]), "-" + yuan(refund["amount"]), "0.00",
                             "0.00", "0.00", "0.00", "0.00", "", "0.00", "0.00", refund["out_request_no"],
                             yuan(refund["fee_back"]), "0.00", ""])
        return rows

    def bill_csv(self, day) -> bytes:
        """The 业务明细 file of ``day``: GBK, ``#`` lines around the table, a tab after ids as the portal does."""
        start = datetime.combine(day, datetime.min.time())
        head = [f"#支付宝业务明细查询", f"#账号：[{self.pid}0156]",
                f"#起始日期：[{start:%Y年%m月%d日} 00:00:00]   终止日期：[{start + timedelta(days=1):%Y年%m月%d日} 00:00:00]",
                "#-----------------------------------------业务明细列表----------------------------------------",
                ",".join(BILL_COLUMNS)]
        rows = self.bill_rows(day)
        body = [",".join(v + "\t" if i in (0, 1, 21) else v for i, v in enumerate(row)) for row in rows]
        trades = [r for r in rows if r[2] == "交易"]
        refunds = [r for r in rows if r[2] == "退款"]
        tail = ["#-----------------------------------------业务明细列表结束------------------------------------",
                f"#交易合计：{len(trades)}笔，商家实收：{yuan(sum(fen(r[12]) for r in trades))}元，商家优惠：0.00元",
                f"#退款合计：{len(refunds)}笔，商家实收：-{yuan(sum(fen(r[12][1:]) for r in refunds))}元，商家优惠：0.00元",
                f"#导出时间：[{datetime.now(CHINA):%Y年%m月%d日 %H:%M:%S}]"]
        return ("\r\n".join(head + body + tail) + "\r\n").encode("gbk")

    def bill_zip(self, day) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            z.writestr(f"{self.pid}0156_{day:%Y%m%d}_业务明细.csv", self.bill_csv(day))
            z.writestr(f"{self.pid}0156_{day:%Y%m%d}_业务明细(汇总).csv",
                       f"#支付宝业务汇总查询\r\n#账号：[{self.pid}0156]\r\n门店编号,门店名称,交易订单总笔数\r\n".encode("gbk"))
        return buffer.getvalue()


BILL_COLUMNS = ("支付宝交易号", "商户订单号", "业务类型", "商品名称", "创建时间", "完成时间", "门店编号", "门店名称",
                "操作员", "终端号", "对方账户", "订单金额（元）", "商家实收（元）", "支付宝红包（元）", "集分宝（元）",
                "支付宝优惠（元）", "商家优惠（元）", "券核销金额（元）", "券名称", "商家红包消费金额（元）", "卡消费金额（元）",
                "退款批次号/请求号", "服务费（元）", "分润（元）", "备注")

PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width"></head><body><h1>{title}</h1>{body}</body></html>"""


def make_handler(fake: AlipayFake):
    class Handler(BaseHTTPRequestHandler):
        """``/gateway.do`` (GET or POST form): the open API and the agreement page; ``/_pages/agreement/{token}``
        (POST): the customer's answer; ``/_bill/{token}``: a bill; ``/_fake/...``: the test's controls
        (POST ``/_fake/unsign`` agreement_no=..., POST ``/_fake/fault`` kind=&method=&seconds=&times=,
        GET ``/_fake/state``)."""

        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            log.debug("%s " + fmt, self.address_string(), *args)

        def send(self, code: int, body: bytes, kind: str = "application/json;charset=utf-8",
                 headers: dict | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def form(self) -> dict[str, str]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
            query = urllib.parse.urlsplit(self.path).query
            return {k: v[-1] for k, v in urllib.parse.parse_qs("&".join(p for p in (query, raw) if p),
                                                                keep_blank_values=True).items()}

        def do_GET(self):
            self.route()

        def do_POST(self):
            self.route()

        def route(self):
            path = urllib.parse.urlsplit(self.path).path
            params = self.form()
            if path == "/gateway.do":
                return self.gateway(params)
            if path.startswith("/_pages/agreement/"):
                try:
                    target = fake.sign_agreement(path.rsplit("/", 1)[1], params.get("choice") == "agree")
                except Business as e:
                    return self.send(410, PAGE.format(title="支付宝", body=escape(e.sub_msg)).encode(), "text/html")
                if target:
                    return self.send(303, b"", "text/plain", {"Location": target})
                return self.send(200, PAGE.format(title="支付宝", body="<p>Signed.</p>").encode(), "text/html")
            if path.startswith("/_bill/"):
                bill = fake.bills.get(path[len("/_bill/"):].removesuffix(".csv.zip"))
                if bill is None:
                    return self.send(404, b"no such bill", "text/plain")
                return self.send(200, bill, "application/zip")
            if path == "/_fake/unsign":
                fake.unsign(params["agreement_no"])
                return self.send(200, b"{}")
            if path == "/_fake/fault":
                fake.fault(params["kind"], params.get("method", "*"), float(params.get("seconds", 0)),
                           int(params.get("times", 1)))
                return self.send(200, b"{}")
            if path == "/_fake/state":
                with fake.lock:
                    state = {"agreements": fake.agreements, "trades": fake.trades,
                             "refunds": list(fake.refunds.values()),
                             "notices": [{"params": n.params, "answers": n.answers} for n in fake.notices]}
                return self.send(200, json.dumps(state, ensure_ascii=False).encode())
            self.send(404, b"not found", "text/plain")

        def gateway(self, params: dict[str, str]):
            method = params.get("method", "")
            fault = fake._take_fault(method)
            if fault and fault[0] == "down":
                return self.send(503, b"<html>503 Service Unavailable</html>", "text/html")
            try:
                method, biz = fake.check(params)
                if method == "alipay.user.agreement.page.sign":
                    return self.send(200, fake.sign_page(biz, params).encode(), "text/html;charset=utf-8")
                body = fake.api(method, biz, params)
            except Business as e:
                error = {"code": e.code, "msg": "Business Failed" if e.code == "40004" else "Invalid Arguments",
                         "sub_code": e.sub_code, "sub_msg": e.sub_msg}
                if e.code == "40004":  # a business failure is a signed answer
                    return self.send(200, fake.answer(method, error))
                return self.send(200, json.dumps({"error_response": error}, ensure_ascii=False).encode())
            if fault and fault[0] == "slow":
                time.sleep(fault[1])
            if fault and fault[0] == "lost":
                return self.send(502, b"<html>502 Bad Gateway</html>", "text/html")
            self.send(200, fake.answer(method, body))

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.alipay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keys", type=Path, required=True,
                        help="a folder with app_public.pem and alipay_private.pem (Keys.write)")
    parser.add_argument("--app-id", default="2021000000000001")
    parser.add_argument("--pid", default="2088000000000001")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
    keys = Keys(b"", (args.keys / "app_public.pem").read_bytes(), (args.keys / "alipay_private.pem").read_bytes(), b"")
    fake = AlipayFake(keys, app_id=args.app_id, pid=args.pid)
    fake.start(args.host, args.port)
    log.info("Alipay fake on %s", fake.gateway)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
