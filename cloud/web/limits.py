"""Rate limits: a token bucket per client address (and per phone, per username...) for what a stranger can
repeat cheaply and harmfully: registering, landing from a QR code, signing in, asking for a one-time code,
topping up.

The buckets live in this process's memory. Several cloud processes behind one balancer each keep their
own, so the fleet's limit is the setting times the number of processes; that is the price of no shared
store, and still turns 300 registrations in 8 seconds into a few dozen. A limit is ``COUNT/SECONDS``:
COUNT tries at once, refilled evenly over SECONDS.

The way in for a route: ``guard(request, "register", phone=...)`` counts one try against
``register_address`` for the caller's address and ``register_phone`` for the phone, and raises
``RateLimited`` (429 with Retry-After, a page or JSON by the path) when either bucket is empty. Other
code may ask a ``Limiter`` directly: ``limiter.hit("otp_phone", phone) -> bool``.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse

from cloud.web.pages import problem, translator

# The defaults, per process. Generous per address: many phones share one address behind a mobile carrier's
# NAT; tight per phone (an SMS costs money and tells whether a number is a customer).
DEFAULTS = {
    "landing_address": "120/60",  # QR landings
    "register_address": "30/600",
    "register_phone": "5/600",
    "login_address": "30/300",  # staff sign-in (a username is also locked after failures: people/staff.py)
    "login_username": "20/300",
    "otp_address": "10/600",  # one-time sign-in codes sent
    "otp_phone": "5/3600",
    "topup_address": "30/60",
    "topup_phone": "10/60",
}
MAX_KEYS = 100_000  # buckets kept per limit before the full (idle) ones are dropped


@dataclass(frozen=True)
class Rate:
    """COUNT tries at once, refilled evenly over PER_S seconds."""

    count: int
    per_s: float

    @classmethod
    def parse(cls, text: str) -> "Rate":
        count, _, per = text.strip().partition("/")
        try:
            rate = cls(int(count), float(per))
        except ValueError:
            raise ValueError(f"{text!r}: write COUNT/SECONDS, e.g. 20/60") from None
        if not (1 <= rate.count <= 1_000_000 and math.isfinite(rate.per_s) and 0 < rate.per_s <= 86400):
            raise ValueError(f"{text!r}: COUNT from 1 to 1000000, SECONDS more than 0 and at most 86400")
        return rate


def parse_limits(text: str) -> dict[str, Rate | None]:
    """The limits: DEFAULTS, changed by ``text`` (``--rate-limits``): ``NAME=COUNT/SECONDS`` or ``NAME=off``,
    comma-separated; ``off`` alone turns every limit off. An unknown name or a bad value is an error that
    names it."""
    chosen: dict[str, str] = dict(DEFAULTS)
    text = text.strip()
    if text == "off":
        return {name: None for name in DEFAULTS}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or name not in DEFAULTS:
            raise ValueError(f"--rate-limits: {item!r}: use NAME=COUNT/SECONDS or NAME=off, NAME one of "
                             f"{', '.join(DEFAULTS)}")
        chosen[name] = value.strip()
    out: dict[str, Rate | None] = {}
    for name, value in chosen.items():
        try:
            out[name] = None if value == "off" else Rate.parse(value)
        except ValueError as e:
            raise ValueError(f"--rate-limits {name}: {e}") from None
    return out


class RateLimited(Exception):
    """Too many tries at ``name``: wait ``retry_after`` seconds."""

    def __init__(self, name: str, retry_after: int):
        super().__init__(f"{name}: too many tries, wait {retry_after} s")
        self.name, self.retry_after = name, retry_after


class Limiter:
    """Token buckets by (limit name, key), in this process; safe to call from the threadpool's threads."""

    def __init__(self, limits: dict[str, Rate | None], trusted_proxies: frozenset[str] = frozenset(),
                 clock=time.monotonic):
        self.limits = limits
        self.trusted_proxies = trusted_proxies
        self.clock = clock
        self._buckets: dict[str, dict[str, tuple[float, float]]] = {name: {} for name in limits}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "Limiter":
        """The limits and trusted proxies the cloud's settings name; a bad one stops the cloud, named."""
        try:
            return cls(parse_limits(settings.rate_limits), trusted(settings.trusted_proxy))
        except ValueError as e:
            raise SystemExit(str(e)) from None

    def _take(self, name: str, key: str, take: bool) -> float:
        """Seconds until one try is allowed (0: allowed now, and taken if ``take``)."""
        rate = self.limits.get(name, False)
        if rate is False:
            raise KeyError(f"no rate limit named {name!r}")
        if rate is None:
            return 0.0
        now = self.clock()
        with self._lock:
            buckets = self._buckets[name]
            tokens, then = buckets.get(key, (float(rate.count), now))
            tokens = min(float(rate.count), tokens + (now - then) * rate.count / rate.per_s)
            if tokens >= 1:
                if take:
                    tokens -= 1
                    if len(buckets) >= MAX_KEYS and key not in buckets:
                        self._forget_full(name, rate, now)
                    buckets[key] = (tokens, now)
                return 0.0
            return (1 - tokens) * rate.per_s / rate.count

    def _forget_full(self, name: str, rate: Rate, now: float) -> None:
        """Drop the buckets that have refilled: they are what a new bucket would be."""
        buckets = self._buckets[name]
        for key, (tokens, then) in list(buckets.items()):
            if tokens + (now - then) * rate.count / rate.per_s >= rate.count:
                del buckets[key]

    def hit(self, name: str, key: str) -> bool:
        """Count one try at ``name`` for ``key`` (an address, a phone number...): False when over the limit,
        and then nothing is counted."""
        return self._take(name, key, True) == 0

    def retry_after(self, name: str, key: str) -> int:
        """Whole seconds until ``key`` may try ``name`` again (0: now)."""
        return math.ceil(self._take(name, key, False))

    def check(self, name: str, key: str) -> None:
        """``hit``, raising ``RateLimited`` when over the limit."""
        if not self.hit(name, key):
            raise RateLimited(name, max(1, self.retry_after(name, key)))


def trusted(text: str) -> frozenset[str]:
    """The proxies' addresses from ``--trusted-proxy`` (comma-separated), each checked."""
    out = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            out.add(str(ipaddress.ip_address(part)))
        except ValueError:
            raise ValueError(f"--trusted-proxy {part!r}: an IP address, e.g. 127.0.0.1") from None
    return frozenset(out)


def client_address(request: Request, trusted_proxies: frozenset[str]) -> str:
    """Who is asking: the connection's address, or, only when that is a trusted proxy, the last address in
    X-Forwarded-For that is not one (anything left of it the client may have written itself)."""
    peer = request.client.host if request.client else "?"
    if peer not in trusted_proxies:
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted_proxies:
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a proxy we trust wrote nonsense: count it against the proxy
    return peer


def limiter(request: Request) -> Limiter:
    return request.app.state.limiter


def guard(request: Request, what: str, **keys: str | None) -> None:
    """Count one try at ``what`` from this client's address, and per key given (``phone=...``,
    ``username=...``: the limit ``{what}_{kind}``); raise ``RateLimited`` when any is over."""
    lim = limiter(request)
    lim.check(f"{what}_address", client_address(request, lim.trusted_proxies))
    for kind, key in keys.items():
        if key:
            lim.check(f"{what}_{kind}", key)


def too_many(request: Request, exc: RateLimited):
    """429 with Retry-After: JSON for the API, a page in the reader's language for everyone else."""
    headers = {"Retry-After": str(exc.retry_after)}
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": f"too many requests: try again in {exc.retry_after} s"}, status_code=429,
                            headers=headers)
    _ = translator(request)
    response = problem(request, 429, _("Too many tries"),
                       _("Too many tries from here in a short time. Wait {seconds} seconds, then try again.",
                         seconds=exc.retry_after))
    response.headers.update(headers)
    return response
