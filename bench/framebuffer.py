"""Time to turn the machine's screen into framebuffer bytes and write them, per pixel format.

    python bench/framebuffer.py --frames 50

Draws the real screen at 800x480 and shows it on a file standing in for /dev/fb0 (with a fake sysfs
folder); run it on a Pi to see what the controller pays for every redraw there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from controller.screen import Screen  # noqa: E402
from hw.fb import FramebufferDisplay  # noqa: E402
from hw.sim import PngDisplay  # noqa: E402

WIDTH, HEIGHT = 800, 480


def fake_fb(folder: str, bpp: int) -> FramebufferDisplay:
    """A device file and sysfs folder for an 800x480 framebuffer at ``bpp``, with a Pi-like padded stride."""
    stride = WIDTH * bpp // 8 + 64
    for name, text in (("virtual_size", f"{WIDTH},{HEIGHT}"), ("stride", str(stride)),
                       ("bits_per_pixel", str(bpp))):
        with open(os.path.join(folder, name), "w") as f:
            f.write(text + "\n")
    device = os.path.join(folder, "fb0")
    with open(device, "wb") as f:
        f.write(bytes(stride * HEIGHT))
    return FramebufferDisplay(device, sysfs_dir=folder)


def median_ms(fn, frames: int) -> float:
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50)
    frames = parser.parse_args().frames
    results = {}
    for bpp in (16, 24, 32):
        with tempfile.TemporaryDirectory(prefix="vend-fb-") as folder, fake_fb(folder, bpp) as fb:
            screen = Screen(fb, "vm-001", "Lobby", b"0123456789abcdef", "https://vend.example.com", 5.0)
            url = f"https://vend.example.com/q/vm-001.1000000.0.{'a' * 22}"
            image = screen.render(url, "Ready")
            results[f"{bpp}bpp"] = {
                "render_ms": median_ms(lambda: screen.render(url, "Ready"), frames),
                "convert_ms": median_ms(lambda: fb.frame(image), frames),
                "show_ms": median_ms(lambda: fb.show(image), frames),
            }
    # Baseline: what the simulator's screen pays for the same frame, a PNG file written whole.
    with tempfile.TemporaryDirectory(prefix="vend-png-") as folder:
        png = PngDisplay(os.path.join(folder, "screen.png"), (WIDTH, HEIGHT))
        baseline = median_ms(lambda: png.show(image), frames)
    print(json.dumps({
        "benchmark": "framebuffer",
        "size": f"{WIDTH}x{HEIGHT}",
        "per_frame": results,
        "baseline": {"png_show_ms": baseline, "what": "the same frame shown by the simulator's PNG display"},
        "settings": {"frames": frames, "machine": platform.machine(), "python": sys.version.split()[0]},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
