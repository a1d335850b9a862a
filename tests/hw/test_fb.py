"""Tests for hw/fb.py against a plain file standing in for /dev/fb0, and the machine's screen drawn through it."""

import errno
import os
import subprocess

import pytest
from tests.tools import need
import qrcode
from PIL import Image, ImageChops

from controller.config import parse
from controller.screen import Screen
from hw import HardwareError, open_display
from hw.fb import FramebufferDisplay

CLOUD = "https://vend.example.com"
BLACK, RED, GREEN, BLUE, WHITE = (0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)

# The bytes each colour must have in memory on a little-endian Pi.
RGB565 = {BLACK: "0000", RED: "00f8", GREEN: "e007", BLUE: "1f00", WHITE: "ffff"}
XRGB8888 = {BLACK: "000000ff", RED: "0000ffff", GREEN: "00ff00ff", BLUE: "ff0000ff", WHITE: "ffffffff"}
BGR888 = {BLACK: "000000", RED: "0000ff", GREEN: "00ff00", BLUE: "ff0000", WHITE: "ffffff"}
FORMATS = {16: RGB565, 24: BGR888, 32: XRGB8888}


def fake_fb(tmp_path, width, height, bpp, stride=None, *, device_bytes=None, fill=b"\0", sysfs=None):
    """A framebuffer's sysfs folder and a file for its device, as the kernel would show them."""
    stride = stride if stride is not None else width * bpp // 8
    sysfs_dir = tmp_path / "sys" / "fb0"
    sysfs_dir.mkdir(parents=True, exist_ok=True)
    files = {"virtual_size": f"{width},{height}\n", "stride": f"{stride}\n", "bits_per_pixel": f"{bpp}\n"}
    files.update(sysfs or {})
    for name, text in files.items():
        if text is not None:
            (sysfs_dir / name).write_text(text)
    device = tmp_path / "fb0"
    device.write_bytes(fill * (device_bytes if device_bytes is not None else stride * height))
    return str(device), str(sysfs_dir)


def open_fb(tmp_path, width, height, bpp, stride=None, **kwargs):
    device, sysfs_dir = fake_fb(tmp_path, width, height, bpp, stride, **kwargs)
    return FramebufferDisplay(device, sysfs_dir=sysfs_dir)


def pixel(data: bytes, fb: FramebufferDisplay, x: int, y: int) -> str:
    step = fb.bits_per_pixel // 8
    start = y * fb.stride + x * step
    return data[start:start + step].hex()


def screen_of(fb: FramebufferDisplay) -> Image.Image:
    """What the panel shows, decoded from the device's bytes by pillow's own unpackers."""
    with open(fb.device, "rb") as f:
        data = f.read(fb.frame_bytes)
    # pillow's "BGR;16" is the little-endian 5-6-5 word with red in the high bits, as a Pi stores it.
    rawmode = {16: "BGR;16", 24: "BGR", 32: "BGRX"}[fb.bits_per_pixel]
    return Image.frombytes("RGB", fb.size, data, "raw", rawmode, fb.stride)


def four_colours(size):
    image = Image.new("RGB", size, "black")
    image.putpixel((0, 0), RED)
    image.putpixel((1, 0), GREEN)
    image.putpixel((2, 0), BLUE)
    image.putpixel((size[0] - 1, size[1] - 1), WHITE)
    return image


@pytest.mark.parametrize("bpp", [16, 24, 32])
def test_each_colour_lands_as_the_framebuffers_own_bytes(tmp_path, bpp):
    with open_fb(tmp_path, 4, 3, bpp) as fb:
        assert fb.size == (4, 3)
        fb.show(four_colours(fb.size))
        data = open(fb.device, "rb").read()
    colours = FORMATS[bpp]
    assert len(data) == 4 * 3 * bpp // 8
    assert pixel(data, fb, 0, 0) == colours[RED]
    assert pixel(data, fb, 1, 0) == colours[GREEN]
    assert pixel(data, fb, 2, 0) == colours[BLUE]
    assert pixel(data, fb, 3, 2) == colours[WHITE]
    assert pixel(data, fb, 3, 0) == colours[BLACK]
    assert pixel(data, fb, 0, 2) == colours[BLACK]


def test_rgb565_keeps_the_top_bits_of_each_channel(tmp_path):
    with open_fb(tmp_path, 1, 1, 16) as fb:
        fb.show(Image.new("RGB", (1, 1), (0b10101111, 0b01100111, 0b11010111)))
        data = open(fb.device, "rb").read()
    # R 10101, G 011001, B 11010 -> 1010 1011 0011 1010 = 0xAB3A, stored low byte first.
    assert data.hex() == "3aab"


@pytest.mark.parametrize("bpp, stride", [(16, 12), (32, 20), (24, 13)])
def test_each_line_starts_at_its_stride_and_the_padding_is_zero(tmp_path, bpp, stride):
    # The device starts out full of 0xAA, so zero padding proves the frame wrote it.
    with open_fb(tmp_path, 3, 2, bpp, stride, fill=b"\xaa") as fb:
        image = Image.new("RGB", (3, 2), "black")
        image.putpixel((0, 1), RED)
        image.putpixel((2, 1), BLUE)
        fb.show(image)
        data = open(fb.device, "rb").read()
    colours, row = FORMATS[bpp], 3 * bpp // 8
    assert len(data) == stride * 2
    assert pixel(data, fb, 0, 1) == colours[RED]
    assert data[stride:stride + bpp // 8].hex() == colours[RED]
    assert pixel(data, fb, 2, 1) == colours[BLUE]
    for y in range(2):
        assert data[y * stride + row:(y + 1) * stride] == bytes(stride - row)


def test_a_whole_frame_goes_to_offset_zero_and_nothing_past_it(tmp_path):
    with open_fb(tmp_path, 2, 2, 16, device_bytes=100, fill=b"\xaa") as fb:
        fb.show(Image.new("RGB", (2, 2), "white"))
        fb.show(Image.new("RGB", (2, 2), "red"))
        data = open(fb.device, "rb").read()
    assert data[:8].hex() == "00f8" * 4
    assert data[8:] == b"\xaa" * 92
    assert fb.frames == 2


def test_a_narrower_image_is_scaled_up_and_centred_between_black_bars(tmp_path):
    image = Image.new("RGB", (2, 2))
    image.putdata([RED, GREEN, BLUE, WHITE])
    with open_fb(tmp_path, 8, 4, 32) as fb:
        fb.show(image)
    shown = screen_of(fb)
    # Twice the size, two black columns either side; each pixel a sharp 2x2 block.
    expected = ["K K R R G G K K", "K K R R G G K K", "K K B B W W K K", "K K B B W W K K"]
    names = {BLACK: "K", RED: "R", GREEN: "G", BLUE: "B", WHITE: "W"}
    rows = [" ".join(names[shown.getpixel((x, y))] for x in range(8)) for y in range(4)]
    assert rows == expected


def test_a_wider_image_is_scaled_down_and_centred_between_black_bands(tmp_path):
    with open_fb(tmp_path, 4, 8, 16) as fb:
        fb.show(Image.new("RGB", (8, 8), "white"))
    shown = screen_of(fb)
    assert [shown.getpixel((0, y)) for y in range(8)] == [BLACK] * 2 + [WHITE] * 4 + [BLACK] * 2
    assert {shown.getpixel((x, 4)) for x in range(4)} == {WHITE}


def test_a_small_qr_is_scaled_up_sharp_and_still_scans(tmp_path):
    qr = qrcode.QRCode(box_size=1, border=2)
    qr.add_data(f"{CLOUD}/q/vm-001.1000000.0.aaaaaaaaaaaaaaaaaaaaaa")
    tiny = qr.make_image().get_image()
    with open_fb(tmp_path, 800, 480, 16) as fb:
        fb.show(tiny)
    shown = screen_of(fb)
    # Only black and white: no grey edge a camera could read either way.
    assert {colour for _, colour in shown.getcolors()} == {BLACK, WHITE}
    assert decode_qr(shown, tmp_path) == f"{CLOUD}/q/vm-001.1000000.0.aaaaaaaaaaaaaaaaaaaaaa"


def test_images_of_any_mode_are_shown_transparency_as_black(tmp_path):
    with open_fb(tmp_path, 2, 1, 32) as fb:
        see_through = Image.new("RGBA", (2, 1), (255, 255, 255, 0))
        see_through.putpixel((1, 0), (0, 0, 255, 255))
        fb.show(see_through)
        assert screen_of(fb).getpixel((0, 0)) == BLACK
        assert screen_of(fb).getpixel((1, 0)) == BLUE
        fb.show(Image.new("1", (2, 1), 1))
        assert screen_of(fb).getpixel((0, 0)) == WHITE


def decode_qr(image: Image.Image, tmp_path) -> str:
    path = tmp_path / "seen.png"
    image.save(path)
    out = subprocess.run([need("zbarimg"), "--raw", "-q", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"zbarimg found no code: {out.stderr}"
    return out.stdout.strip()


@pytest.mark.parametrize("size", [(800, 480), (480, 800)])
@pytest.mark.parametrize("bpp", [16, 32])
def test_the_qr_read_back_from_the_framebuffer_opens_the_machines_url(tmp_path, size, bpp):
    with open_fb(tmp_path, *size, bpp, stride=size[0] * bpp // 8 + 64) as fb:
        screen = Screen(fb, "vm-001", "Lobby", b"0123456789abcdef", CLOUD, rotate_s=5.0)
        assert screen.refresh(1_000_000.0, "Ready")
        shown = screen_of(fb)
    assert screen.url.startswith(f"{CLOUD}/q/vm-001.")
    assert decode_qr(shown, tmp_path) == screen.url


class Panel:
    """Just a display's size: enough for looking at the screen's layout."""

    def __init__(self, size):
        self.size = size


def changed_box(a: Image.Image, b: Image.Image):
    return ImageChops.difference(a, b).getbbox()


def overlap(box_a, box_b) -> bool:
    return box_a[0] < box_b[2] and box_b[0] < box_a[2] and box_a[1] < box_b[3] and box_b[1] < box_a[3]


@pytest.mark.parametrize("size", [(800, 480), (480, 800), (320, 240), (480, 480)])
def test_the_screen_shows_code_name_and_status_apart_and_whole_at_any_shape(size):
    url_a = f"{CLOUD}/q/vm-001.1000000.0.aaaaaaaaaaaaaaaaaaaaaa"
    url_b = f"{CLOUD}/q/vm-001.1000005.1.bbbbbbbbbbbbbbbbbbbbbb"
    lobby = Screen(Panel(size), "vm-001", "Lobby", b"0123456789abcdef", CLOUD, rotate_s=5.0)
    hall = Screen(Panel(size), "vm-001", "Hall B", b"0123456789abcdef", CLOUD, rotate_s=5.0)
    base = lobby.render(url_a, "Ready")
    code = changed_box(base, lobby.render(url_b, "Ready"))
    name = changed_box(base, hall.render(url_a, "Ready"))
    status = changed_box(base, lobby.render(url_a, "Offline - reconnecting"))
    assert code and name and status, "the code, the name and the status must each be visible"
    assert not overlap(code, name) and not overlap(code, status) and not overlap(name, status)
    width, height = size
    for box in (code, name, status):
        assert box[0] > 0 and box[1] > 0 and box[2] < width and box[3] < height, f"{box} touches the edge"
    # The code's data modules span at least 2/5 of the short side (on a 7-inch 800x480 panel, 10-pixel
    # modules of about 1.9 mm): big enough for a phone at arm's length.
    assert code[2] - code[0] >= min(size) * 2 // 5


def test_a_long_name_and_status_shrink_to_stay_on_a_landscape_screen():
    screen = Screen(Panel((800, 480)), "vm-001", "The vending machine in the east lobby, second floor",
                    b"0123456789abcdef", CLOUD, rotate_s=5.0)
    image = screen.render(f"{CLOUD}/q/vm-001.1000000.0.aaaaaaaaaaaaaaaaaaaaaa",
                          "Dropping your product from A12...")
    edges = [image.getpixel((x, y)) for x in range(800) for y in (0, 479)]
    edges += [image.getpixel((x, y)) for x in (0, 799) for y in range(480)]
    assert set(edges) == {WHITE}


def test_a_missing_device_says_to_check_the_config_and_the_overlay(tmp_path):
    _, sysfs_dir = fake_fb(tmp_path, 8, 8, 16)
    with pytest.raises(HardwareError) as e:
        FramebufferDisplay(str(tmp_path / "fb7"), sysfs_dir=sysfs_dir)
    assert str(e.value) == (f"no framebuffer device {tmp_path / 'fb7'}: check [screen] framebuffer and that the "
                            "display's driver/dtoverlay is loaded (ls /dev/fb*)")


def test_the_config_opens_the_framebuffer_it_names(tmp_path):
    cfg = parse("[machine]\nid = vm-1\nsecret = 0123456789abcdef\n[cloud]\nurl = http://cloud\n"
                "[hardware]\nbackend = sim\nslots = A1\n"
                f"[screen]\ndisplay = framebuffer\nframebuffer = {tmp_path / 'fb0'}\n")
    with pytest.raises(HardwareError, match=r"^no framebuffer device .*/fb0: check \[screen\] framebuffer"):
        open_display(cfg)


def test_permission_denied_says_to_join_the_video_group(tmp_path, monkeypatch):
    device, sysfs_dir = fake_fb(tmp_path, 8, 8, 16)

    # The tests may run as root, whom file modes do not stop; the kernel's answer is stood in for here.
    def denied(path, flags, *args):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(HardwareError) as e:
        FramebufferDisplay(device, sysfs_dir=sysfs_dir)
    assert "permission denied opening" in str(e.value)
    assert "add the user the controller runs as to the video group" in str(e.value)


@pytest.mark.parametrize("missing", ["virtual_size", "stride", "bits_per_pixel"])
def test_a_missing_sysfs_file_is_named(tmp_path, missing):
    device, sysfs_dir = fake_fb(tmp_path, 8, 8, 16, sysfs={missing: None})
    with pytest.raises(HardwareError) as e:
        FramebufferDisplay(device, sysfs_dir=sysfs_dir)
    assert str(e.value) == (f"cannot read {sysfs_dir}/{missing} (No such file or directory) to learn the "
                            f"geometry of {device}: is it a framebuffer?")


@pytest.mark.parametrize("name, text, message", [
    ("virtual_size", "800x480\n", "virtual_size reads '800x480', expected width,height like 800,480"),
    ("stride", "wide\n", "stride reads 'wide', expected a whole number"),
    ("stride", "8\n", "stride is 8 bytes, less than one line of 8 pixels at 16 bpp"),
])
def test_an_unreadable_sysfs_value_is_named(tmp_path, name, text, message):
    device, sysfs_dir = fake_fb(tmp_path, 8, 8, 16, sysfs={name: text})
    with pytest.raises(HardwareError) as e:
        FramebufferDisplay(device, sysfs_dir=sysfs_dir)
    assert str(e.value) == f"{sysfs_dir}/{message}"


def test_the_sysfs_folder_follows_the_devices_real_name(tmp_path):
    (tmp_path / "fb1").write_bytes(b"")
    os.symlink(tmp_path / "fb1", tmp_path / "screen")
    with pytest.raises(HardwareError, match=r"^cannot read /sys/class/graphics/fb1/virtual_size "):
        FramebufferDisplay(str(tmp_path / "screen"))


def test_a_device_not_named_like_a_framebuffer_needs_its_sysfs_folder(tmp_path):
    (tmp_path / "panel").write_bytes(b"")
    with pytest.raises(HardwareError) as e:
        FramebufferDisplay(str(tmp_path / "panel"))
    assert str(e.value) == (f"cannot tell which framebuffer {tmp_path / 'panel'} is: check [screen] framebuffer, "
                            "it should name a device like /dev/fb0")


def test_an_unsupported_depth_is_named_with_the_supported_ones(tmp_path):
    device, sysfs_dir = fake_fb(tmp_path, 8, 8, 8)
    with pytest.raises(HardwareError) as e:
        FramebufferDisplay(device, sysfs_dir=sysfs_dir)
    assert str(e.value).startswith(f"{device} uses 8 bits per pixel, which this driver cannot write; "
                                   "supported: 16, 24, 32")


def test_a_file_too_small_for_one_frame_is_refused(tmp_path):
    device, sysfs_dir = fake_fb(tmp_path, 800, 480, 16, 1664, device_bytes=1000)
    with pytest.raises(HardwareError) as e:
        FramebufferDisplay(device, sysfs_dir=sysfs_dir)
    assert str(e.value) == (f"{device} is a file of 1000 bytes, too small for one 800x480 frame at 16 bpp with a "
                            "stride of 1664 (798720 bytes)")
