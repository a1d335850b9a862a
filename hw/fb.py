"""The machine's screen as a Linux framebuffer (``/dev/fbN``), written whole frames at a time with pillow.

The geometry comes from ``/sys/class/graphics/fbN/``: ``virtual_size`` ("800,480"), ``stride`` (bytes per
line, which may be more than the pixels need) and ``bits_per_pixel``. Pixel formats are those of a
little-endian Pi: 16 bpp RGB565, 24 bpp BGR and 32 bpp XRGB8888 (bytes B, G, R, X in memory).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat

from PIL import Image, ImageChops

from .base import Display, HardwareError

log = logging.getLogger(__name__)

SUPPORTED_BPP = (16, 24, 32)
_FB_NAME_RE = re.compile(r"^fb[0-9]+\Z")

# RGB565 splits green across both bytes of the little-endian word: the high byte is RRRRRGGG, the low byte
# GGGBBBBB. Each lookup table moves one channel's bits to its place in one byte; the two parts of a byte
# never overlap, so adding them is an OR.
_R_HIGH = [v & 0xF8 for v in range(256)]
_G_HIGH = [v >> 5 for v in range(256)]
_G_LOW = [((v >> 2) & 0x07) << 5 for v in range(256)]
_B_LOW = [v >> 3 for v in range(256)]


def _rgb565_le(image: Image.Image) -> bytes:
    r, g, b = image.split()
    high = ImageChops.add(r.point(_R_HIGH), g.point(_G_HIGH))
    low = ImageChops.add(g.point(_G_LOW), b.point(_B_LOW))
    # An "LA" image packs as L, A for each pixel: the low byte, then the high byte.
    return Image.merge("LA", (low, high)).tobytes()


def _xrgb8888_le(image: Image.Image) -> bytes:
    # X is written as 0xFF, not 0: the Pi's firmware framebuffer can treat the fourth byte as alpha (hence
    # config.txt's framebuffer_ignore_alpha), and an alpha of 0 would leave the screen blank.
    return image.convert("RGBA").tobytes("raw", "BGRA")


def _bgr888(image: Image.Image) -> bytes:
    return image.tobytes("raw", "BGR")


_CONVERTERS = {16: _rgb565_le, 24: _bgr888, 32: _xrgb8888_le}


class FramebufferDisplay(Display):
    """A framebuffer device; ``show`` fits an image to the screen and writes it as one frame at offset 0."""

    def __init__(self, device: str = "/dev/fb0", *, sysfs_dir: str | None = None):
        self.device = device
        self.sysfs_dir = sysfs_dir if sysfs_dir is not None else _sysfs_dir_of(device)
        self._fd = _open_device(device)
        try:
            self.size, self.stride, self.bits_per_pixel = _read_geometry(self.sysfs_dir, device)
            width, height = self.size
            self._row_bytes = width * self.bits_per_pixel // 8
            self.frame_bytes = self.stride * height
            self._check_room(self._fd)
        except BaseException:
            os.close(self._fd)
            raise
        self._convert = _CONVERTERS[self.bits_per_pixel]
        self._frame = bytearray(self.frame_bytes)  # reused: its padding bytes stay zero from here on
        self.frames = 0
        log.info("framebuffer %s: %dx%d, %d bpp, stride %d", device, width, height, self.bits_per_pixel,
                 self.stride)

    def _check_room(self, fd: int) -> None:
        # A real device's size cannot be read from stat; a plain file standing in for one can be too short,
        # and writing past its end would quietly grow it instead of failing like the device does.
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_size < self.frame_bytes:
            width, height = self.size
            raise HardwareError(
                f"{self.device} is a file of {st.st_size} bytes, too small for one {width}x{height} frame at "
                f"{self.bits_per_pixel} bpp with a stride of {self.stride} ({self.frame_bytes} bytes)"
            )

    def frame(self, image: Image.Image) -> bytes:
        """The bytes of one whole frame showing ``image``, in the framebuffer's own format and stride."""
        pixels = self._convert(self._fit(image))
        if self.stride == self._row_bytes:
            return pixels
        row, frame = self._row_bytes, self._frame
        for y in range(self.size[1]):
            frame[y * self.stride:y * self.stride + row] = pixels[y * row:(y + 1) * row]
        return bytes(frame)

    def _fit(self, image: Image.Image) -> Image.Image:
        if "A" in image.getbands() or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, "black"), rgba)
        image = image.convert("RGB")
        if image.size == self.size:
            return image
        width, height = self.size
        scale = min(width / image.width, height / image.height)
        fitted = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        # NEAREST keeps a QR's modules hard-edged black and white; a smoothing filter would put grey
        # borders between them that a phone camera can misread. Text and photos look blockier for it,
        # but the screen draws at the display's own size, so scaling is the exception.
        scaled = image.resize(fitted, Image.Resampling.NEAREST)
        canvas = Image.new("RGB", self.size, "black")
        canvas.paste(scaled, ((width - fitted[0]) // 2, (height - fitted[1]) // 2))
        return canvas

    def show(self, image: Image.Image) -> None:
        """Fit ``image`` to the screen (aspect kept, centred on black) and write it as one frame."""
        data = self.frame(image)
        try:
            written = os.pwrite(self._fd, data, 0)
        except OSError as e:
            raise HardwareError(f"cannot write a frame to {self.device}: {e.strerror}") from e
        if written != len(data):
            # The framebuffer driver writes what fits in its memory; less means the geometry read from
            # sysfs does not match the device.
            raise HardwareError(
                f"{self.device} took {written} of the {len(data)} bytes of a frame; does {self.sysfs_dir} "
                "describe this device?"
            )
        self.frames += 1

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _sysfs_dir_of(device: str) -> str:
    # A udev symlink such as /dev/screen resolves to the fbN whose geometry sysfs describes.
    name = os.path.basename(os.path.realpath(device))
    if not _FB_NAME_RE.match(name):
        raise HardwareError(
            f"cannot tell which framebuffer {device} is: check [screen] framebuffer, it should name a device "
            "like /dev/fb0"
        )
    return f"/sys/class/graphics/{name}"


def _open_device(device: str) -> int:
    try:
        return os.open(device, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise HardwareError(
            f"no framebuffer device {device}: check [screen] framebuffer and that the display's "
            "driver/dtoverlay is loaded (ls /dev/fb*)"
        ) from None
    except PermissionError:
        raise HardwareError(
            f"permission denied opening {device}: add the user the controller runs as to the video group "
            "(the shipped unit does this with SupplementaryGroups=video)"
        ) from None
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise HardwareError(f"{device} exists but no driver answers it: is the display's dtoverlay "
                                "loaded?") from None
        raise HardwareError(f"cannot open framebuffer {device}: {e.strerror}") from None


def _read_geometry(sysfs_dir: str, device: str) -> tuple[tuple[int, int], int, int]:
    text = _read_sysfs(sysfs_dir, "virtual_size", device)
    match = re.fullmatch(r"([0-9]+),([0-9]+)", text)
    if not match or 0 in (int(match[1]), int(match[2])):
        raise HardwareError(f"{sysfs_dir}/virtual_size reads {text!r}, expected width,height like 800,480")
    size = (int(match[1]), int(match[2]))
    bpp = _read_int(sysfs_dir, "bits_per_pixel", device)
    if bpp not in SUPPORTED_BPP:
        raise HardwareError(
            f"{device} uses {bpp} bits per pixel, which this driver cannot write; supported: "
            f"{', '.join(map(str, SUPPORTED_BPP))} (set the display's depth, e.g. framebuffer_depth in "
            "config.txt or the overlay's bpp parameter)"
        )
    stride = _read_int(sysfs_dir, "stride", device)
    if stride < size[0] * bpp // 8:
        raise HardwareError(
            f"{sysfs_dir}/stride is {stride} bytes, less than one line of {size[0]} pixels at {bpp} bpp"
        )
    return size, stride, bpp


def _read_int(sysfs_dir: str, name: str, device: str) -> int:
    text = _read_sysfs(sysfs_dir, name, device)
    if not re.fullmatch(r"[0-9]+", text):
        raise HardwareError(f"{sysfs_dir}/{name} reads {text!r}, expected a whole number")
    return int(text)


def _read_sysfs(sysfs_dir: str, name: str, device: str) -> str:
    path = os.path.join(sysfs_dir, name)
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        raise HardwareError(
            f"cannot read {path} ({e.strerror}) to learn the geometry of {device}: is it a framebuffer?"
        ) from None
