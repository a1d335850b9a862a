"""WeChat Pay's formats as the fake speaks them: its regular expressions, the bill's columns, the keys a test
makes (the merchant's and the platform's), signatures (RSA-SHA256) and AEAD_AES_256_GCM under the API v3 key."""

from __future__ import annotations

import base64
import re
import secrets
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

BEIJING = timezone(timedelta(hours=8))
AUTH_RE = re.compile(r'WECHATPAY2-SHA256-RSA2048 (.+)\Z')
OUT_TRADE_NO_RE = re.compile(r"[A-Za-z0-9_\-|*]{6,32}\Z")
OUT_REFUND_NO_RE = re.compile(r"[A-Za-z0-9_\-|*@]{1,64}\Z")
FEE_RATE_PER_MILLE = 6  # 0.60%, WeChat Pay's usual rate for a small merchant
BILL_HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
               "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,"
               "商户数据包,手续费,费率,订单金额,申请退款金额,费率备注")
BILL_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"


def _pem_key(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _self_signed(key, name: str, serial: int) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(serial).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365)).sign(key, hashes.SHA256()))


def _nonce(n: int = 32) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


def rsa_sign(key, message: str) -> str:
    return base64.b64encode(key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa_verify(public_key, message: str, signature: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature), message.encode(), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def aead_encrypt(apiv3_key: str, plaintext: str, associated_data: str) -> dict:
    nonce = _nonce(12)
    ciphertext = AESGCM(apiv3_key.encode()).encrypt(nonce.encode(), plaintext.encode(), associated_data.encode())
    return {"algorithm": "AEAD_AES_256_GCM", "nonce": nonce, "associated_data": associated_data,
            "ciphertext": base64.b64encode(ciphertext).decode()}


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


@dataclass
class Keys:
    """A merchant's credentials and the platform's own key and certificate, made fresh for a test."""

    mchid: str = "1900000109"
    appid: str = "wxd678efh567hg6787"
    app_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    apiv3_key: str = field(default_factory=lambda: _nonce(32))
    merchant_key: object = None
    merchant_serial: str = ""
    platform_key: object = None
    platform_cert: x509.Certificate | None = None

    def __post_init__(self):
        self.merchant_key = self.merchant_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        serial = secrets.randbits(150)
        self.merchant_serial = self.merchant_serial or format(serial, "X")
        self.platform_key = self.platform_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.platform_cert = self.platform_cert or _self_signed(self.platform_key, "Tenpay.com Root CA",
                                                                secrets.randbits(150))

    @property
    def platform_serial(self) -> str:
        return format(self.platform_cert.serial_number, "X")

    @property
    def public_key_id(self) -> str:
        return "PUB_KEY_ID_01" + self.platform_serial[:30]

    def platform_public_key_pem(self) -> str:
        return self.platform_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def write(self, folder) -> dict[str, str]:
        """The merchant's secret files (mode 0600) in ``folder``: their paths by what they hold."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = {"private_key": _pem_key(self.merchant_key), "apiv3_key": self.apiv3_key,
                 "app_secret": self.app_secret, "platform_public_key": self.platform_public_key_pem()}
        paths = {}
        for name, text in files.items():
            path = folder / f"wechat_{name}"
            path.write_text(text)
            path.chmod(0o600)
            paths[name] = str(path)
        return paths


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code
