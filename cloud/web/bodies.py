"""JSON request bodies that are valid JSON but not text: a lone surrogate (``"\\ud800"``) decodes to a Python
string that no database, log or page can encode, and used to surface deep inside a route as a 500
(``UnicodeEncodeError``). One check for every route, before any of them runs: 422 naming the field."""

from __future__ import annotations

import json
import re

# Bodies larger than this are not inspected here (no route takes one that large; the route's own limit
# answers those): the check must never make the cloud hold more of a request than it would anyway.
INSPECT_MAX = 1 << 20
# A surrogate can reach a decoded JSON string only through an escape: raw surrogate bytes are not UTF-8.
ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def lone_surrogate(value, path: tuple = ()) -> tuple | None:
    """The path (keys and indexes) of the first string in ``value`` holding a lone surrogate, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if lone_surrogate(key) is not None:
                return path  # the key itself cannot be named
            found = lone_surrogate(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = lone_surrogate(item, (*path, i))
            if found is not None:
                return found
    return None


def _json_body(scope) -> bool:
    """Whether FastAPI would decode this request's body as JSON: a JSON media type, or none at all."""
    if scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
        return False
    content_type = next((v for k, v in scope.get("headers", ()) if k == b"content-type"), None)
    if content_type is None:
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class RefuseLoneSurrogates:
    """ASGI middleware: reads a JSON body (up to ``INSPECT_MAX``) before the route, answers 422
    ``{"error": "FIELD: ..."}`` when a string in it holds a lone surrogate, and otherwise hands the route
    the very same bytes (a signed webhook's signature still holds)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _json_body(scope):
            return await self.app(scope, receive, send)
        messages, size, complete = [], 0, False
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                complete = True
                break
            if size > INSPECT_MAX:
                break
        if complete:
            body = b"".join(m.get("body", b"") for m in messages)
            where = None
            if ESCAPE.search(body):
                try:
                    where = lone_surrogate(json.loads(body))
                except ValueError:
                    pass  # not JSON: FastAPI answers that itself
            if where is not None:
                field = ".".join(str(p) for p in where) or "body"
                return await _refuse(send, f"{field}: holds a lone surrogate (an escape like \\ud800 that is not "
                                           "half of a pair), which is not text; send valid Unicode")

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _refuse(send, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": 422,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
