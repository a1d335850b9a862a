"""What every ``vendctl`` verb shares: the HTTP client of the cloud's API (the token from the environment or
the demo's file), the table printer, money and durations as people write them."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request

from cloud.core.money import format_money

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TOKEN_FILE = os.path.join("var", "cloud", "admin-token")


class CliError(Exception):
    pass


class Client:
    def __init__(self, url: str, token: str):
        self.url = url.rstrip("/")
        self.token = token

    @classmethod
    def from_env(cls) -> "Client":
        token = os.environ.get("VEND_TOKEN", "")
        if not token:
            path = os.environ.get("VEND_TOKEN_FILE", DEFAULT_TOKEN_FILE)
            try:
                with open(path) as f:
                    token = f.read().strip()
            except OSError:
                raise CliError(f"no API token: set VEND_TOKEN, or run where {path} exists") from None
        return cls(os.environ.get("VEND_CLOUD_URL", DEFAULT_URL), token)

    def call(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        return self.send(method, path, data, "application/json")

    def fetch_text(self, path: str) -> str:
        """A GET whose answer is text (a CSV), not JSON."""
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            raise CliError(f"GET {path}: {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            raise CliError(f"cannot reach the cloud at {self.url}: {e.reason}") from None

    def send(self, method: str, path: str, data: bytes | None, content_type: str):
        """``data`` as the request's body as it is (a file to upload, say), with its media type; the JSON
        answer."""
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            try:
                detail = json.loads(e.read()).get("error")
            except ValueError:
                detail = e.reason
            raise CliError(f"{method} {path}: {e.code} {detail}") from None
        except urllib.error.URLError as e:
            raise CliError(f"cannot reach the cloud at {self.url}: {e.reason}; is it running? "
                           "(VEND_CLOUD_URL points elsewhere)") from None


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    cells = [[title for _, title in columns]] + [["" if r.get(k) is None else str(r.get(k)) for k, _ in columns]
                                                 for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


SECRET_KEYS = ("secret", "mqtt_password", "key_pem")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def hide_secrets(result: dict, show: bool) -> dict:
    """The API's answer as printed: secrets only with --show-secrets."""
    return result if show else {k: v for k, v in result.items() if k not in SECRET_KEYS}


def duration(text: str) -> float:
    """'24h', '90m', '7d', '30s' or a number of seconds."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 24h, 90m, 7d or 30s")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def print_broker(result: dict) -> None:
    """What the cloud did to the broker's users; on stderr if it could not."""
    note = result.get("broker")
    if note is None:
        return
    print(f"broker: {note}", file=sys.stderr if "NOT" in note else sys.stdout)


def money(amount: int, currency: str) -> str:
    """An amount as people write it, with its currency."""
    return format_money(amount, currency)
