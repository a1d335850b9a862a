"""The cloud's settings: command-line options, each with an environment variable and a default."""

from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from protocol.topics import MACHINE_ID_RE


@dataclass
class Settings:
    var: str = "var/cloud"
    db: str = ""
    broker: str = "embedded"
    broker_port: int = 1883
    mqtt_protocol: str = ""
    # "_" is never in a machine id, nor in a machine's broker login (ID.N, or ID as a certificate's CN): on the
    # machine listeners the login is the client id, so no machine can ever connect under the cloud's id.
    client_id: str = "vend_cloud-1"
    http: str = "127.0.0.1:8000"
    public_url: str = ""
    time_zone: str = "UTC"  # where the fleet sells: times on every page are in it (stored in UTC always)
    # The fleet page's street map: a tile server's URL template ({z}/{x}/{y}) and its attribution; empty: the plan.
    map_tiles: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    map_attribution: str = "© OpenStreetMap contributors"
    token_ttl_s: float = 60.0
    token_skew_s: float = 30.0
    vend_timeout_s: float = 30.0
    expiry_grace_s: float = 10.0
    shared_ingest: bool = True
    # False: this process answers people (pages, API, payments) and stores none of the machines' messages;
    # another process on the same database does (docs/scaling.md): the ingest's work never delays a purchase.
    ingest: bool = True
    broker_files: str = ""
    broker_ports: str = "1883,8883,8884"
    broker_pid_file: str = ""
    machine_broker: str = ""
    # Alert limits (cloud/fleet/alerts.py); their checks are there too.
    alert_offline_s: float = 600.0
    alert_failed_vends: int = 3
    alert_failed_window_s: float = 3600.0
    alert_temp_min_c: float = 0.0
    alert_temp_max_c: float = 30.0
    alert_temp_for_s: float = 600.0
    alert_door_open_s: float = 900.0
    alert_unsynced_s: float = 900.0
    alert_incident_window_s: float = 86400.0
    alert_low_stock_fraction: float = 0.25
    # Alerts kept and delivered (cloud/alerts/): how often they are looked for, how deliveries are retried.
    alert_check_s: float = 5.0
    alert_retry_s: float = 30.0
    alert_attempts: int = 12
    alert_send_timeout_s: float = 10.0
    alert_webhook_secret_file: str = ""  # empty: <var>/alert-webhook-secret, made on first start
    sandbox_url: str = ""
    sandbox_secret: str = ""
    sandbox_timeout_s: float = 5.0
    sandbox_retries: int = 2
    sandbox_tolerance_s: float = 300.0
    sandbox_confirm_timeout_s: float = 60.0
    # Stripe: cards, Apple Pay and Google Pay (cloud/payments/stripe/, which checks them when it is built).
    stripe_key_file: str = ""
    stripe_webhook_secret_file: str = ""
    stripe_api_url: str = ""
    stripe_currency: str = "CNY"
    stripe_timeout_s: float = 10.0
    stripe_tolerance_s: float = 300.0
    stripe_confirm_timeout_s: float = 300.0
    # WeChat Pay (cloud/payments/wechat/): offered when --wechat-mchid is set; checked by check_wechat.
    wechat_mchid: str = ""
    wechat_appid: str = ""
    wechat_cert_serial: str = ""
    wechat_private_key_file: str = ""
    wechat_apiv3_key_file: str = ""
    wechat_app_secret_file: str = ""
    wechat_public_key_file: str = ""
    wechat_public_key_id: str = ""
    wechat_api_url: str = "https://api.mch.weixin.qq.com"
    wechat_oauth_url: str = "https://open.weixin.qq.com/connect/oauth2/authorize"
    wechat_token_url: str = "https://api.weixin.qq.com/sns/oauth2/access_token"
    wechat_timeout_s: float = 10.0
    wechat_tolerance_s: float = 300.0
    wechat_confirm_timeout_s: float = 180.0
    wechat_payscore_service_id: str = ""
    # The wallet's free top-up form: demo money, for the demo with its sandbox only. Off, the wallet gets money
    # only through a provider or an administrator's credit (POST /api/v1/customers/{id}/wallet/credit).
    demo_topups: bool = False
    # Rate limits (cloud/web/limits.py, which has the defaults): NAME=COUNT/SECONDS or NAME=off, comma-separated.
    rate_limits: str = ""
    trusted_proxy: str = ""  # proxies whose X-Forwarded-For names the client, comma-separated addresses
    # Sign-in codes for customers on a new phone (cloud/people/senders/): e-mail, text messages, or neither.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_from: str = ""
    smtp_user: str = ""
    smtp_password_file: str = ""
    smtp_timeout_s: float = 10.0
    sms_url: str = ""
    sms_token_file: str = ""
    sms_timeout_s: float = 10.0
    # Alipay (cloud/payments/alipay/): the merchant app's id, its RSA2 private key and Alipay's public key (files
    # of mode 0600), the gateway (production, Alipay's sandbox, or a local fake), the merchant's 2088 partner id.
    alipay_app_id: str = ""
    alipay_private_key_file: str = ""
    alipay_public_key_file: str = ""
    alipay_gateway: str = "https://openapi.alipay.com/gateway.do"
    alipay_pid: str = ""
    alipay_timeout_s: float = 10.0
    alipay_subject: str = "Vending machine"

    def resolve(self) -> "Settings":
        self.check_client_id()
        self.check_sandbox()
        self.check_wechat()
        self.check_senders()
        self.check_alert_delivery()
        self.check_time_zone()
        self.check_map_tiles()
        self.check_alipay()
        if not self.db:
            self.db = f"sqlite:///{os.path.abspath(os.path.join(self.var, 'cloud.db'))}"
        if not self.mqtt_protocol:
            self.mqtt_protocol = "3.1.1" if self.broker == "embedded" else "5"
        if not self.public_url:
            self.public_url = f"http://{self.http}"
        if self.mqtt_protocol != "5":
            self.shared_ingest = False  # shared subscriptions are an MQTT 5 feature
        if not self.ingest and self.client_id == Settings.client_id:
            self.client_id = "vend_cloud-web"  # beside the ingesting one's default: one id, one connection
        return self

    def check_time_zone(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # the standard library's; only at start

        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SystemExit(f"--time-zone {self.time_zone!r}: not a time zone; use an IANA name like "
                             "Asia/Shanghai, Europe/Berlin or UTC") from None
    def check_map_tiles(self) -> None:
        """The tile server's URL template: http(s), with {z}, {x} and {y} and no other placeholder."""
        if not self.map_tiles:
            return
        parts = urlsplit(self.map_tiles)
        if parts.scheme not in ("http", "https") or not parts.netloc or "{" in parts.netloc:
            raise SystemExit(f"--map-tiles {self.map_tiles!r}: give an http(s) URL template like "
                             "https://tile.openstreetmap.org/{z}/{x}/{y}.png, or an empty value for no street map")
        if sorted(re.findall(r"{([^}]*)}", self.map_tiles)) != ["x", "y", "z"]:
            raise SystemExit(f"--map-tiles {self.map_tiles!r}: the template must hold {{z}}, {{x}} and {{y}} once "
                             "each and no other placeholder (no {s} subdomains)")
        if not self.map_attribution.strip():
            raise SystemExit("--map-attribution: a tile server's maps need their attribution shown")

    @property
    def map_tile_origin(self) -> str:
        """Where the tiles come from (scheme://host:port), for the page's content policy; "" without tiles."""
        if not self.map_tiles:
            return ""
        parts = urlsplit(self.map_tiles)
        return f"{parts.scheme}://{parts.netloc}"

    def check_wechat(self) -> None:
        """WeChat Pay's settings (its key files are read when the cloud starts: cloud/payments/wechat/)."""
        for option, value, low, high in (("--wechat-timeout", self.wechat_timeout_s, 0.1, 60),
                                         ("--wechat-tolerance", self.wechat_tolerance_s, 1, 3600),
                                         ("--wechat-confirm-timeout", self.wechat_confirm_timeout_s, 60, 3600)):
            if not (math.isfinite(value) and low <= value <= high):
                raise SystemExit(f"{option} {value}: must be between {low} and {high}")
        if not self.wechat_mchid:
            return
        for option, value in (("--wechat-appid", self.wechat_appid), ("--wechat-cert-serial", self.wechat_cert_serial),
                              ("--wechat-private-key-file", self.wechat_private_key_file),
                              ("--wechat-apiv3-key-file", self.wechat_apiv3_key_file),
                              ("--wechat-app-secret-file", self.wechat_app_secret_file)):
            if not value:
                raise SystemExit(f"--wechat-mchid is set, so {option} is needed too")
        if bool(self.wechat_public_key_file) != bool(self.wechat_public_key_id):
            raise SystemExit("--wechat-public-key-file and --wechat-public-key-id go together (WeChat Pay's public "
                             "key in place of its platform certificates), or neither")
        for option, value in (("--wechat-api-url", self.wechat_api_url), ("--wechat-oauth-url", self.wechat_oauth_url),
                              ("--wechat-token-url", self.wechat_token_url)):
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise SystemExit(f"{option} {value!r}: must be an http(s) URL")

    def check_client_id(self) -> None:
        """Refuse an MQTT client id that a machine could also connect as: the broker would close the cloud's
        session each time that machine connects ("already connected, closing old connection")."""
        base, dot, generation = self.client_id.rpartition(".")
        if MACHINE_ID_RE.match(self.client_id) or (dot and MACHINE_ID_RE.match(base) and generation.isdigit()):
            raise SystemExit(f"--client-id {self.client_id!r}: a machine could connect under this id (it is a "
                             "valid machine id or machine login); put a '_' in it, e.g. vend_cloud-1")
        if not 1 <= len(self.client_id.encode()) <= 65535:
            raise SystemExit("--client-id: give a client id of 1 to 65535 bytes")

    def check_sandbox(self) -> None:
        """The sandbox provider's settings, refused with the option that is wrong and why."""
        for option, value, low, high in (("--sandbox-timeout", self.sandbox_timeout_s, 0.1, 60),
                                         ("--sandbox-retries", self.sandbox_retries, 0, 10),
                                         ("--sandbox-tolerance", self.sandbox_tolerance_s, 1, 3600),
                                         ("--sandbox-confirm-timeout", self.sandbox_confirm_timeout_s, 1, 3600)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
                raise SystemExit(f"{option} {value!r}: must be from {low} to {high}")
        if not self.sandbox_url:
            return
        parts = urlsplit(self.sandbox_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise SystemExit(f"--sandbox-url {self.sandbox_url!r}: use http(s)://HOST:PORT of the sandbox provider")
        if len(self.sandbox_secret) < 16:
            raise SystemExit("--sandbox-url is set, so the sandbox's webhook secret is needed: set VEND_SANDBOX_SECRET "
                             "(or --sandbox-secret) to the secret the sandbox signs with, at least 16 characters")

    def check_alert_delivery(self) -> None:
        """How alerts are looked for and their deliveries retried, refused with the option and why."""
        for option, value, low, high in (("--alert-check", self.alert_check_s, 0.05, 3600),
                                         ("--alert-retry", self.alert_retry_s, 0.05, 86400),
                                         ("--alert-attempts", self.alert_attempts, 1, 100),
                                         ("--alert-send-timeout", self.alert_send_timeout_s, 0.1, 60)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
                raise SystemExit(f"{option} {value!r}: must be from {low} to {high}")

    def check_senders(self) -> None:
        """The sign-in code senders' settings; their secret files are read when the senders are made."""
        for option, value in (("--smtp-timeout", self.smtp_timeout_s), ("--sms-timeout", self.sms_timeout_s)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.1 <= value <= 60):
                raise SystemExit(f"{option} {value!r}: must be from 0.1 to 60")
        if self.smtp_host:
            if not 1 <= self.smtp_port <= 65535:
                raise SystemExit(f"--smtp-port {self.smtp_port!r}: must be from 1 to 65535")
            if self.smtp_security not in ("starttls", "tls", "none"):
                raise SystemExit(f"--smtp-security {self.smtp_security!r}: use starttls, tls or none")
            if "@" not in self.smtp_from:
                raise SystemExit("--smtp-host is set, so --smtp-from is needed: the address codes and alerts are sent from")
            if self.smtp_user and not self.smtp_password_file:
                raise SystemExit("--smtp-user is set, so --smtp-password-file is needed (a file of mode 0600)")
        if self.sms_url:
            parts = urlsplit(self.sms_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SystemExit(f"--sms-url {self.sms_url!r}: use the http(s) URL the gateway takes messages at")
            if not self.sms_token_file:
                raise SystemExit("--sms-url is set, so --sms-token-file is needed (a file of mode 0600)")

    def check_alipay(self) -> None:
        """Alipay's settings; its key files are read (and their mode checked) when the provider is built."""
        if not (isinstance(self.alipay_timeout_s, (int, float)) and math.isfinite(self.alipay_timeout_s)
                and 0.5 <= self.alipay_timeout_s <= 60):
            raise SystemExit(f"--alipay-timeout {self.alipay_timeout_s!r}: must be from 0.5 to 60")
        if not self.alipay_app_id:
            return
        if not self.alipay_app_id.isdigit():
            raise SystemExit(f"--alipay-app-id {self.alipay_app_id!r}: the app id Alipay gave, digits only")
        for option, path in (("--alipay-private-key-file", self.alipay_private_key_file),
                             ("--alipay-public-key-file", self.alipay_public_key_file)):
            if not path:
                raise SystemExit(f"--alipay-app-id is set, so {option} is needed (a file of mode 0600)")
        parts = urlsplit(self.alipay_gateway)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SystemExit(f"--alipay-gateway {self.alipay_gateway!r}: use https://openapi.alipay.com/gateway.do "
                             "(or Alipay's sandbox gateway)")
        if self.alipay_pid and not (self.alipay_pid.startswith("2088") and self.alipay_pid.isdigit()
                                    and len(self.alipay_pid) == 16):
            raise SystemExit(f"--alipay-pid {self.alipay_pid!r}: the merchant's partner id, 16 digits from 2088")
        if not 1 <= len(self.alipay_subject) <= 200:
            raise SystemExit("--alipay-subject: 1 to 200 characters (what the customer's Alipay bill shows)")

    @property
    def broker_address(self) -> tuple[str, int]:
        if self.broker == "embedded":
            return "127.0.0.1", self.broker_port
        host, _, port = self.broker.rpartition(":")
        if not host or not port.isdigit():
            raise SystemExit(f"--broker {self.broker!r}: use 'embedded' or HOST:PORT")
        return host, int(port)

    @property
    def http_address(self) -> tuple[str, int]:
        host, _, port = self.http.rpartition(":")
        if not host or not port.isdigit():
            raise SystemExit(f"--http {self.http!r}: use HOST:PORT")
        return host, int(port)


OPTIONS = [
    ("--alipay-app-id", "alipay_app_id", str, "the Alipay app id (open.alipay.com); empty: no Alipay"),
    ("--alipay-private-key-file", "alipay_private_key_file", str, "the app's RSA2 private key (PEM or Alipay's bare "
     "base64), a file of mode 0600"),
    ("--alipay-public-key-file", "alipay_public_key_file", str, "Alipay's public key for the app (PEM or bare base64), "
     "a file of mode 0600"),
    ("--alipay-gateway", "alipay_gateway", str, "Alipay's gateway; https://openapi-sandbox.dl.alipaydev.com/gateway.do "
     "for Alipay's sandbox"),
    ("--alipay-pid", "alipay_pid", str, "the merchant's partner id (2088...), checked against imported bills"),
    ("--alipay-timeout", "alipay_timeout_s", float, "seconds to wait for Alipay on each request (0.5-60)"),
    ("--alipay-subject", "alipay_subject", str, "what the customer's Alipay bill calls a purchase (then the order id)"),
    # (option, attribute, type, help)
    ("--var", "var", str, "folder for the database and secrets"),
    ("--db", "db", str, "database URL (default: SQLite under --var); postgresql+psycopg://... for PostgreSQL"),
    ("--broker", "broker", str, "'embedded' (amqtt, in this process) or HOST:PORT of Mosquitto"),
    ("--broker-port", "broker_port", int, "port of the embedded broker"),
    ("--mqtt-protocol", "mqtt_protocol", str, "5 or 3.1.1 (default: 3.1.1 for embedded, else 5)"),
    ("--client-id", "client_id", str, "MQTT client id of this cloud process (unique per process)"),
    ("--http", "http", str, "HOST:PORT to serve the web pages and API on"),
    ("--public-url", "public_url", str, "the URL customers' phones reach this cloud at"),
    ("--time-zone", "time_zone", str, "the IANA time zone the fleet sells in (e.g. Asia/Shanghai): pages show "
     "times in it; the database keeps UTC"),
    ("--map-tiles", "map_tiles", str, "the fleet page's street map tiles: a URL template with {z}, {x} and {y} "
     "(default OpenStreetMap's); the operator's browser loads them, and shows the plain plan when it cannot; "
     "empty: the plan only"),
    ("--map-attribution", "map_attribution", str, "the attribution the tile server asks for, shown on the map"),
    ("--vend-timeout", "vend_timeout_s", float, "seconds a machine has to start a vend"),
    ("--expiry-grace", "expiry_grace_s", float, "seconds past a vend's expiry before the cloud voids it"),
    ("--token-ttl", "token_ttl_s", float, "seconds a QR token is accepted after its window starts"),
    ("--broker-files", "broker_files", str, "folder where the cloud writes the production Mosquitto's config, "
     "password file, ACL and TLS files (e.g. /var/lib/vend-broker); empty: the broker is not managed"),
    ("--broker-ports", "broker_ports", str, "the generated config's listeners: LOCAL,PASSWORD,CERTIFICATE "
     "(the cloud's on 127.0.0.1, machines with a password over TLS, machines with a certificate)"),
    ("--broker-pid-file", "broker_pid_file", str, "Mosquitto's pid file, to signal it after a change (else "
     "vend-broker-reload.path reloads it)"),
    ("--machine-broker", "machine_broker", str, "the host name machines reach the broker at; also the "
     "name in the broker's certificate"),
    ("--alert-offline", "alert_offline_s", float, "seconds without a word from a machine before it is an alert"),
    ("--alert-failed-vends", "alert_failed_vends", int, "failed vends on one slot within --alert-failed-window "
     "that make an alert"),
    ("--alert-failed-window", "alert_failed_window_s", float, "seconds the failed vends are counted over"),
    ("--alert-temp-min", "alert_temp_min_c", float, "lowest temperature (C) that is not an alert"),
    ("--alert-temp-max", "alert_temp_max_c", float, "highest temperature (C) that is not an alert"),
    ("--alert-temp-for", "alert_temp_for_s", float, "seconds out of range before a temperature is an alert"),
    ("--alert-door-open", "alert_door_open_s", float, "seconds a door may stay open before it is an alert"),
    ("--alert-unsynced", "alert_unsynced_s", float, "seconds a machine's ledger may be ahead of the cloud with "
     "no progress before it is an alert"),
    ("--alert-incident-window", "alert_incident_window_s", float, "seconds a drop no order paid for (or one "
     "naming an order the machine was never sent) stays an alert"),
    ("--alert-low-stock", "alert_low_stock_fraction", float, "a slot holding less than this share of its par "
     "level (its capacity if it has none) is low on stock (0-1)"),
    ("--alert-check", "alert_check_s", float, "seconds between looks for alerts (they are also looked for after every "
     "stored batch of events, a second after the last look at the soonest)"),
    ("--alert-retry", "alert_retry_s", float, "seconds before an alert's failed delivery is tried again; doubled "
     "after each failure, up to an hour"),
    ("--alert-attempts", "alert_attempts", int, "deliveries of one alert to one address tried at most (1-100)"),
    ("--alert-send-timeout", "alert_send_timeout_s", float, "seconds to wait for an alert's webhook receiver "
     "(0.1-60; e-mail uses --smtp-timeout)"),
    ("--alert-webhook-secret-file", "alert_webhook_secret_file", str, "a file of mode 0600 holding the secret "
     "alert webhooks are signed with (default: <var>/alert-webhook-secret, made on first start)"),
    ("--sandbox-url", "sandbox_url", str, "base URL of the sandbox payment provider (python -m "
     "cloud.payments.sandbox); empty: customers pay by wallet only"),
    ("--sandbox-secret", "sandbox_secret", str, "the secret the sandbox signs its webhooks with (prefer the "
     "environment variable: a command line is visible to every user)"),
    ("--sandbox-timeout", "sandbox_timeout_s", float, "seconds to wait for the sandbox on each request (0.1-60)"),
    ("--sandbox-retries", "sandbox_retries", int, "retries of a sandbox request that got no answer (0-10)"),
    ("--sandbox-tolerance", "sandbox_tolerance_s", float, "seconds a signed webhook stays valid: older ones are "
     "refused as replays (1-3600)"),
    ("--sandbox-confirm-timeout", "sandbox_confirm_timeout_s", float, "seconds an order waits for the sandbox to "
     "confirm its authorisation before it is declined (1-3600)"),
    ("--stripe-key-file", "stripe_key_file", str, "a file of mode 0600 holding the Stripe secret key (sk_live_... "
     "or sk_test_... for Stripe's test mode); empty: no card payments"),
    ("--stripe-webhook-secret-file", "stripe_webhook_secret_file", str, "a file of mode 0600 holding the signing "
     "secret (whsec_...) of the webhook endpoint at PUBLIC_URL/api/v1/payments/webhook/stripe"),
    ("--stripe-api-url", "stripe_api_url", str, "Stripe's API address; empty: Stripe's own (a local fake or "
     "stripe-mock in tests)"),
    ("--stripe-currency", "stripe_currency", str, "the currency customers save their card for (Checkout in setup "
     "mode asks for one)"),
    ("--stripe-timeout", "stripe_timeout_s", float, "seconds to wait for Stripe on each request (0.1-60)"),
    ("--stripe-tolerance", "stripe_tolerance_s", float, "seconds a signed Stripe webhook stays valid: older ones "
     "are refused as replays (1-3600)"),
    ("--stripe-confirm-timeout", "stripe_confirm_timeout_s", float, "seconds an order waits for a card payment to "
     "be confirmed (the customer authenticating with their bank) before it is declined (10-3600)"),
    ("--wechat-mchid", "wechat_mchid", str, "WeChat Pay merchant number (商户号); empty: no WeChat Pay"),
    ("--wechat-appid", "wechat_appid", str, "the official account's AppID the customer pages open in"),
    ("--wechat-cert-serial", "wechat_cert_serial", str, "serial number of the merchant API certificate"),
    ("--wechat-private-key-file", "wechat_private_key_file", str, "a file of mode 0600 holding the merchant API "
     "certificate's private key (apiclient_key.pem)"),
    ("--wechat-apiv3-key-file", "wechat_apiv3_key_file", str, "a file of mode 0600 holding the API v3 key (32 "
     "characters)"),
    ("--wechat-app-secret-file", "wechat_app_secret_file", str, "a file of mode 0600 holding the official "
     "account's AppSecret (for OAuth)"),
    ("--wechat-public-key-file", "wechat_public_key_file", str, "WeChat Pay's public key (pub_key.pem), for a "
     "merchant on public-key verification; empty: the platform certificates are fetched"),
    ("--wechat-public-key-id", "wechat_public_key_id", str, "that public key's id (PUB_KEY_ID_...)"),
    ("--wechat-api-url", "wechat_api_url", str, "WeChat Pay's API gateway (a test points it at a fake)"),
    ("--wechat-oauth-url", "wechat_oauth_url", str, "WeChat's OAuth authorize page"),
    ("--wechat-token-url", "wechat_token_url", str, "WeChat's OAuth access_token endpoint"),
    ("--wechat-timeout", "wechat_timeout_s", float, "seconds to wait for WeChat Pay on each request (0.1-60)"),
    ("--wechat-tolerance", "wechat_tolerance_s", float, "seconds a signed notification stays valid: older ones are "
     "refused as replays (1-3600)"),
    ("--wechat-confirm-timeout", "wechat_confirm_timeout_s", float, "seconds a customer has to pay a WeChat Pay "
     "order before it is closed (60-3600)"),
    ("--wechat-payscore-service-id", "wechat_payscore_service_id", str, "the merchant's WeChat Pay Score service "
     "id: purchases are then paid after the drop (a service order the customer confirms); empty: JSAPI payments "
     "before the vend, refunded in full if nothing drops"),
    ("--rate-limits", "rate_limits", str, "change the rate limits, per process: NAME=COUNT/SECONDS or NAME=off, "
     "comma-separated (landing_address, register_address, register_phone, login_address, login_username, "
     "otp_address, otp_phone, topup_address, topup_phone); 'off' turns them all off"),
    ("--trusted-proxy", "trusted_proxy", str, "addresses of the reverse proxies in front of the cloud, "
     "comma-separated: only from these is X-Forwarded-For believed to name the client"),
    ("--smtp-host", "smtp_host", str, "SMTP server that e-mails customers their sign-in codes and "
     "staff their alerts; empty: no e-mail"),
    ("--smtp-port", "smtp_port", int, "its port (587 for starttls, 465 for tls)"),
    ("--smtp-security", "smtp_security", str, "starttls, tls, or none (a relay on this host only)"),
    ("--smtp-from", "smtp_from", str, "the address sign-in codes and alerts are sent from"),
    ("--smtp-user", "smtp_user", str, "the SMTP login; empty: none"),
    ("--smtp-password-file", "smtp_password_file", str, "a file of mode 0600 holding the SMTP password"),
    ("--smtp-timeout", "smtp_timeout_s", float, "seconds to wait for the SMTP server (0.1-60)"),
    ("--sms-url", "sms_url", str, "an SMS gateway's URL: sign-in codes are POSTed there as JSON {to, text} "
     "(docs/pages.md); empty: no text messages"),
    ("--sms-token-file", "sms_token_file", str, "a file of mode 0600 holding the gateway's bearer token"),
    ("--sms-timeout", "sms_timeout_s", float, "seconds to wait for the SMS gateway (0.1-60)"),
]


def read_or_create(path: str, make) -> str:
    """A secret kept in a file of mode 0600, made on first start."""
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make() + "\n")
    with open(path) as f:
        return f.read().strip()


def parse(argv: list[str] | None = None) -> Settings:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="vend-cloud", description="The vending fleet's cloud service.")
    for option, attr, typ, help_text in OPTIONS:
        env = "VEND_" + attr.upper()
        # A string default goes through ``type`` like a command-line value: a bad environment variable gets
        # argparse's clear error naming the option instead of a traceback.
        parser.add_argument(option, dest=attr, type=typ, default=os.environ.get(env, getattr(defaults, attr)),
                            help=f"{help_text} (env {env})")
    parser.add_argument("--demo-topups", dest="demo_topups", action="store_true",
                        default=os.environ.get("VEND_DEMO_TOPUPS", "") in ("1", "true", "yes"),
                        help="offer customers a free top-up form for demo money (make demo sets it; never on a "
                        "cloud that sells for real: goods would be free) (env VEND_DEMO_TOPUPS=1)")
    ingest = os.environ.get("VEND_INGEST", "1").strip().lower()
    if ingest not in ("1", "true", "yes", "0", "false", "no"):
        raise SystemExit(f"VEND_INGEST={ingest!r}: use 1 (this process stores the machines' messages) or 0")
    parser.add_argument("--no-ingest", dest="ingest", action="store_false", default=ingest in ("1", "true", "yes"),
                        help="answer pages, the API and payments only, and leave the machines' messages, the "
                        "alerts and the stock book to another vend-cloud on the same database (env VEND_INGEST=0)")
    parser.add_argument("--no-shared-ingest", dest="shared_ingest", action="store_false",
                        help="subscribe to events without an MQTT 5 shared subscription")
    return Settings(**vars(parser.parse_args(argv))).resolve()
