"""Checks on one field of a request, shared by the management modules: each raises the module's own
``FieldError`` subclass, naming the field, with the HTTP status that fits."""

from __future__ import annotations

from datetime import date

from fastapi import HTTPException

from protocol.messages import CURRENCY_RE


class FieldError(ValueError):
    """Bad input: ``field`` names what is wrong, ``status`` the HTTP status that fits (404 unknown id, 409 a
    state or key that does not allow it, 422 a bad value). Raised before anything is written, or inside the
    caller's transaction, which then rolls back: either way nothing stays written."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status

    def http(self) -> HTTPException:
        return HTTPException(self.status, str(self))


def whole(value, field: str, low: int, high: int, error: type[FieldError], what: str = "a whole number") -> int:
    """``value`` as an int in [low, high] (a bool is not a number)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise error(field, f"must be {what}")
    if value < low:
        raise error(field, "must not be negative" if low == 0 else f"must be at least {low}")
    if value > high:
        raise error(field, f"must be at most {high}")
    return value


def currency(value, field: str, error: type[FieldError]) -> str:
    if not isinstance(value, str) or not CURRENCY_RE.match(value):
        raise error(field, "must be an ISO 4217 code like CNY")
    return value


def day(value, field: str, error: type[FieldError], example: str) -> date | None:
    """A calendar date (a ``date`` or 'YYYY-MM-DD'), or None."""
    if value is None or (isinstance(value, date) and not hasattr(value, "hour")):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise error(field, f"must be a date like {example}")
