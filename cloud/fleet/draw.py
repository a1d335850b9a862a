"""Pictures for the fleet pages, drawn as plain SVG by the cloud itself: the map plane of the fleet's
locations (the plan, shown whenever the street map cannot be: static/fleetmap.js draws that one in the browser),
and a machine's screen as the cloud renders it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from xml.sax.saxutils import escape

import qrcode
import qrcode.image.svg

MAP_W, MAP_H, MAP_MARGIN = 640, 360, 48
SCREEN_W, SCREEN_H = 320, 480  # portrait, like the stacked layout of controller/screen.py


@dataclass(frozen=True)
class Dot:
    """One location on the map plane, in SVG units."""

    x: float
    y: float
    name: str
    machines: list
    fault: bool = False  # a machine there has an alert not resolved
    latitude: float = 0.0  # where it is on the ground, for the street map drawn in the browser
    longitude: float = 0.0


def project(points: list[dict]) -> list[Dot]:
    """Place locations (dicts with latitude, longitude, name, machines, and fault if one has an alert) in the map's box, keeping the
    shape: a degree of longitude is shortened by the cosine of the latitude, as on the ground."""
    if not points:
        return []
    lats = [p["latitude"] for p in points]
    lons = [p["longitude"] for p in points]
    shrink = math.cos(math.radians((min(lats) + max(lats)) / 2))
    span_x = (max(lons) - min(lons)) * shrink
    span_y = max(lats) - min(lats)
    inner_w, inner_h = MAP_W - 2 * MAP_MARGIN, MAP_H - 2 * MAP_MARGIN
    # One place, or places in a line, still get a sensible scale: the empty direction is centred.
    scale = min(inner_w / span_x if span_x else math.inf, inner_h / span_y if span_y else math.inf)
    if math.isinf(scale):
        scale = 0.0
    left = (MAP_W - span_x * scale) / 2
    top = (MAP_H - span_y * scale) / 2
    return [Dot(round(left + (p["longitude"] - min(lons)) * shrink * scale, 1),
                round(top + (max(lats) - p["latitude"]) * scale, 1), p["name"], p["machines"], p.get("fault", False),
                p["latitude"], p["longitude"])
            for p in points]


def qr_svg(url: str, x: int, y: int, size: int) -> str:
    """The QR code of ``url`` as an ``<svg>`` element placed at (x, y), ``size`` units square."""
    img = qrcode.make(url, image_factory=qrcode.image.svg.SvgPathImage, border=2,
                      error_correction=qrcode.constants.ERROR_CORRECT_M)
    text = img.to_string(encoding="unicode")
    # The factory writes a whole document sized in mm; nested, it takes our place and size instead.
    return re.sub(r'<svg width="[^"]*" height="[^"]*"', f'<svg x="{x}" y="{y}" width="{size}" height="{size}"',
                  re.sub(r"<\?xml[^>]*\?>\s*", "", text), count=1)


def _text(x: int, y: int, text: str, size: int, fill: str, weight: str = "normal") -> str:
    # Long text is squeezed into the screen's width rather than cut, as the machine draws it smaller.
    fit = f' textLength="{SCREEN_W * 9 // 10}" lengthAdjust="spacingAndGlyphs"' if len(text) * size * 0.55 > \
        SCREEN_W * 9 / 10 else ""
    return (f'<text x="{x}" y="{y}" font-size="{size}" font-weight="{weight}" fill="{fill}" '
            f'text-anchor="middle" dominant-baseline="middle" font-family="sans-serif"{fit}>{escape(text)}</text>')


def screen_svg(name: str, url: str, status: str, title: str) -> str:
    """A machine's screen laid out as controller/screen.py stacks it: name, QR, "Scan to buy", state."""
    side = min(SCREEN_W * 5 // 6, SCREEN_H * 3 // 5)
    top = SCREEN_H // 6
    below = top + side + (SCREEN_H - top - side) // 3
    centre = SCREEN_W // 2
    return "".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SCREEN_W}" height="{SCREEN_H}" '
        f'viewBox="0 0 {SCREEN_W} {SCREEN_H}" role="img" aria-labelledby="t">',
        f"<title id=\"t\">{escape(title)}</title>",
        f'<rect width="{SCREEN_W}" height="{SCREEN_H}" fill="white" stroke="#333" stroke-width="2"/>',
        _text(centre, SCREEN_H // 12, name, 24, "black", "bold"),
        qr_svg(url, (SCREEN_W - side) // 2, top, side),
        _text(centre, below, "Scan to buy", 24, "black", "bold"),
        _text(centre, below + SCREEN_H // 12, status, 15, "#444"),
        "</svg>",
    ])
