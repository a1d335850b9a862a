"""The manager's dashboard's frame: the navigation every domain adds its pages to, and ``dash``, which
renders a page inside it.

Each domain's ``pages.py`` adds its pages with ``add_page`` when it is imported and checks roles with
``cloud.people.auth.staff(...)``, which sends a browser without a session to the sign-in page and shows a
page (not JSON) for a wrong role. A page's own check is what protects it; the navigation only hides
links a role cannot follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fastapi import Request

from cloud.web.pages import page


@dataclass(frozen=True)
class NavItem:
    """One link of the navigation: where it goes, its English label, who sees it, and its place."""

    path: str
    label: str
    roles: tuple[str, ...]
    order: int


NAV: list[NavItem] = []
# A form offers at most this many machines in a list; past it the machine's id is typed into a field (a list of
# 2,000 machines weighs 100 KB, more than the page around it).
CHOICES_MAX = 200


def add_page(path: str, label: str, roles: tuple[str, ...], order: int) -> None:
    """Put a dashboard page in the navigation (once; adding the same path again changes nothing)."""
    if any(item.path == path for item in NAV):
        return
    NAV.append(NavItem(path, label, tuple(roles), order))
    NAV.sort(key=lambda item: item.order)


class Signed(Protocol):
    """What the navigation needs to know of the person signed in."""

    role: str


def nav_for(caller: Signed | None) -> list[tuple[str, str]]:
    """The (path, label) links the caller's role may follow, in the navigation's order."""
    return [(item.path, item.label) for item in NAV if caller is not None and caller.role in item.roles]


def dash(request: Request, caller: Signed, name: str, status_code: int = 200, **context):
    """A dashboard page: the template gets ``me`` (the caller), ``nav`` and ``active`` (this page's path)."""
    return page(request, name, status_code, me=caller, nav=nav_for(caller), active=request.url.path, **context)
