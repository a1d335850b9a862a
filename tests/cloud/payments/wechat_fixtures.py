"""What the WeChat Pay tests share: one set of merchant and platform keys (RSA keys take a while to make),
and the client configured for a running fake."""

from cryptography.hazmat.primitives import serialization

from cloud.payments.wechat.client import Credentials, WeChatClient
from tests.fakes.wechat import FakeWeChatPay, Keys

KEYS = Keys()


def merchant_pem(keys: Keys) -> str:
    return keys.merchant_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()).decode()


def client_of(fake: FakeWeChatPay, public_key: bool = False, timeout_s: float = 0.5, **kw) -> WeChatClient:
    """The cloud's client, pointed at ``fake`` (its gateway and its OAuth pages)."""
    k = fake.keys
    creds = Credentials(mchid=k.mchid, appid=k.appid, cert_serial=k.merchant_serial, private_key=merchant_pem(k),
                        apiv3_key=k.apiv3_key, app_secret=k.app_secret,
                        public_key=k.platform_public_key_pem() if public_key else "",
                        public_key_id=k.public_key_id if public_key else "")
    return WeChatClient(creds, "http://cloud.test/api/v1/payments/webhook/wechat", gateway=fake.url,
                        oauth_url=fake.url + "/connect/oauth2/authorize",
                        token_url=fake.url + "/sns/oauth2/access_token", timeout_s=timeout_s, **kw)
