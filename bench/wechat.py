"""WeChat Pay's two costs that grow with trade: checking notifications and reading the trade bill.

- notifications: ``--notifications`` signed, AES-256-GCM-encrypted TRANSACTION.SUCCESS bodies, each read as
  the webhook reads it (``cloud.payments.wechat.read_notification``: the wechatpayv3 library's platform
  signature check and decryption, then the cloud's checks); baseline: the bare RSA-SHA256 verification and
  AES-GCM decryption of the same bodies with ``cryptography``, the least any check must do.
- bill: a trade bill of ``--rows`` payments read into statement lines (``cloud.payments.wechat.statement``:
  the backquotes, yuan into fen, the summary checked); baseline: Python's ``csv.reader`` over the same text.

    python bench/wechat.py [--notifications 2000] [--rows 100000]
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import sys
import time
import tracemalloc
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from cloud.payments.wechat import read_notification, statement  # noqa: E402
from cloud.payments.wechat.client import Credentials, WeChatClient  # noqa: E402
from tests.fakes.wechat import FakeWeChatPay  # noqa: E402
from tests.fakes.wechat_formats import Keys  # noqa: E402


def notifications(n: int) -> dict:
    keys = Keys()
    fake = FakeWeChatPay(keys)  # not started: only its books and its signing
    pem = keys.merchant_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode()
    creds = Credentials(keys.mchid, keys.appid, keys.merchant_serial, pem, keys.apiv3_key, keys.app_secret,
                        public_key=keys.platform_public_key_pem(), public_key_id=keys.public_key_id)
    fake.serial = keys.public_key_id
    client = WeChatClient(creds, "http://cloud.test/notify", gateway="http://127.0.0.1:9")
    openid = fake.new_user()
    deliveries = []
    for i in range(n):
        number = f"vendo{i:020d}"
        fake.trades[number] = {"appid": keys.appid, "mchid": keys.mchid, "out_trade_no": number,
                               "trade_type": "JSAPI", "trade_state": "SUCCESS", "trade_state_desc": "支付成功",
                               "attach": "", "openid": openid, "transaction_id": f"4200{i:024d}",
                               "success_time": "2026-12-06T11:00:00+08:00", "bank_type": "OTHERS",
                               "amount": {"total": 350, "currency": "CNY"}}
        deliveries.append(fake.notification(number))
    client.pay  # the library built before the clock starts (public-key mode: no request)
    start = time.perf_counter()
    for headers, body in deliveries:
        read_notification(client, headers, body, time.time())
    ours = time.perf_counter() - start
    public = keys.platform_key.public_key()
    aes = AESGCM(keys.apiv3_key.encode())
    start = time.perf_counter()
    for headers, body in deliveries:
        message = f"{headers['Wechatpay-Timestamp']}\n{headers['Wechatpay-Nonce']}\n{body.decode()}\n".encode()
        public.verify(base64.b64decode(headers["Wechatpay-Signature"]), message, padding.PKCS1v15(), hashes.SHA256())
        r = json.loads(body)["resource"]
        aes.decrypt(r["nonce"].encode(), base64.b64decode(r["ciphertext"]), r["associated_data"].encode())
    bare = time.perf_counter() - start
    return {"notifications": n, "notifications_per_s": round(n / ours), "baseline_bare_crypto_per_s": round(n / bare)}


def bill(rows: int) -> dict:
    keys = Keys()
    fake = FakeWeChatPay(keys)
    for i in range(rows):
        number = f"vendo{i:020d}"
        fake.trades[number] = {"appid": keys.appid, "mchid": keys.mchid, "out_trade_no": number,
                               "trade_type": "JSAPI", "trade_state": "SUCCESS", "attach": f"o{i:020d}",
                               "description": "Vending m1 A2", "openid": "oUser", "transaction_id": f"4200{i:024d}",
                               "success_time": f"2026-12-06T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:"
                                               f"{i % 60:02d}+08:00", "amount": {"total": 100 + i % 900,
                                                                                  "currency": "CNY"}}
    data = fake.bill("2026-12-06").encode()
    settings = SimpleNamespace(wechat_mchid=keys.mchid)
    start = time.perf_counter()
    lines = statement(settings, data)
    ours = time.perf_counter() - start
    assert len(lines) == rows
    del lines
    tracemalloc.start()  # a second reading for its memory: tracing every allocation slows the first tenfold
    statement(settings, data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    start = time.perf_counter()
    count = sum(1 for _ in csv.reader(io.StringIO(data.decode("utf-8"))))
    bare = time.perf_counter() - start
    assert count == rows + 3
    return {"bill_rows": rows, "bill_bytes": len(data), "bill_rows_per_s": round(rows / ours),
            "bill_peak_mib": round(peak / 2**20, 1), "baseline_csv_reader_rows_per_s": round(rows / bare)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps({**notifications(args.notifications), **bill(args.rows)}))


if __name__ == "__main__":
    main()
