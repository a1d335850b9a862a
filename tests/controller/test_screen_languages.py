"""The machine's screen in the machine's languages (issue 15, item 6): ``[screen] languages`` checked when the
config is read, and the screen drawn through the simulator's real PNG display with each line in the first
language and under it the second, in a font that has the Chinese glyphs (CI installs fonts-noto-cjk, a
machine fonts-wqy-microhei)."""

import contextlib
import logging

import pytest
from PIL import Image, ImageChops, ImageFont

from controller.config import ConfigError, parse
from controller.screen import Screen
from controller.words import LANGUAGES, font_file, said
from hw import open_hardware

CLOUD = "https://vend.example.com"
BASE = ("[machine]\nid = vm-1\nname = Lobby B\nsecret = 0123456789abcdef\n[cloud]\nurl = http://cloud\n"
        "[hardware]\nbackend = sim\nslots = A1 A2\n[sim]\ndisplay_path = {png}\n")


@contextlib.contextmanager
def opened(cfg):
    hardware = open_hardware(cfg)
    try:
        yield hardware
    finally:
        hardware.close()


def config(tmp_path, screen: str = ""):
    return parse(BASE.format(png=tmp_path / "screen.png") + (f"[screen]\n{screen}\n" if screen else ""),
                 "/etc/vend/controller.ini")


@pytest.mark.parametrize("written, languages", [
    ("", ("en",)),
    ("languages = zh_CN, en", ("zh_CN", "en")),
    ('languages = ["zh_CN", "en"]', ("zh_CN", "en")),
    ("languages = zh-CN", ("zh_CN",)),
    ("languages = en zh_CN", ("en", "zh_CN")),
])
def test_the_screen_s_languages_come_from_the_config(tmp_path, written, languages):
    assert config(tmp_path, written).screen.languages == languages


@pytest.mark.parametrize("written, words", [
    ("languages = fr", ["/etc/vend/controller.ini: [screen] languages", "'fr' is not valid",
                        "languages of the screen: en, zh_CN"]),
    ("languages = zh_CN, klingon", ["[screen] languages", "'klingon' is not valid"]),
    ("languages = en, zh_CN, zh-CN", ["[screen] languages", "listed twice"]),
    ("languages = zh_CN, zh-CN", ["[screen] languages", "listed twice"]),
    ("languages =", ["[screen] languages", "one or two languages"]),
])
def test_an_unknown_language_is_a_config_error_naming_the_key(tmp_path, written, words):
    with pytest.raises(ConfigError) as e:
        config(tmp_path, written)
    assert all(w in str(e.value) for w in words), str(e.value)


def real_glyphs(font_path: str, text: str) -> bool:
    """Each character of ``text`` drawn as its own glyph: a font without them draws every one as the same
    empty box (or nothing)."""
    font = ImageFont.truetype(font_path, 40) if font_path else ImageFont.load_default(size=40)
    masks = [bytes(font.getmask(c)) for c in text]
    return all(masks) and len(set(masks)) == len(masks)


def test_pillow_s_own_font_has_no_chinese_and_a_cjk_font_is_installed():
    """Why the screen picks a font of its own for Chinese, and the font this box draws it with."""
    assert not real_glyphs("", "扫码购")
    assert font_file("zh_CN"), "no CJK font: install fonts-wqy-microhei or fonts-noto-cjk"
    assert real_glyphs(font_file("zh_CN"), "扫码购")


def test_the_screen_draws_each_line_in_chinese_then_english(tmp_path):
    cfg = config(tmp_path, "languages = zh_CN, en")
    with opened(cfg) as hardware:
        screen = Screen(hardware.display, "vm-1", "B座大堂", b"0123456789abcdef", CLOUD, 5.0,
                        languages=cfg.screen.languages)
        assert screen.refresh(1_000_000.0, said("Ready"))
        assert hardware.display.frames == 1
        assert screen.lines == [("zh_CN", "B座大堂"), ("zh_CN", "扫码购买"), ("en", "Scan to buy"),
                                ("zh_CN", "可以购买"), ("en", "Ready")]
        with Image.open(hardware.display.path) as shown:
            chinese = shown.convert("RGB")
        # The same screen in English alone differs where the Chinese lines are: they were drawn, not boxes.
        english = Screen(hardware.display, "vm-1", "Lobby B", b"0123456789abcdef", CLOUD, 5.0)
        english.refresh(1_000_000.0, said("Ready"))
        assert english.lines == [("en", "Lobby B"), ("en", "Scan to buy"), ("en", "Ready")]
        with Image.open(hardware.display.path) as shown:
            assert ImageChops.difference(chinese, shown.convert("RGB")).getbbox() is not None
        assert all(real_glyphs(screen._fonts["zh_CN"], text) for lang, text in screen.lines if lang == "zh_CN")

        # A vend, and the self-test's heading, in both languages too; a technician's line stays as it is.
        screen.refresh(1_000_001.0, said("Dropping {product} from {slot}...", product=said("your product"),
                                         slot="A1"))
        assert screen.lines[-2:] == [("zh_CN", "正在出货：您的商品（A1）……"), ("en", "Dropping your product from A1...")]
        screen.refresh(1_000_002.0, "Service: online, ledger 4/4 acked")
        assert screen.lines[-1] == ("zh_CN", "Service: online, ledger 4/4 acked")
        screen.show_checks([], said("Self-test: all passed"))
        assert screen.lines == [("zh_CN", "B座大堂"), ("zh_CN", "自检：全部通过"), ("en", "Self-test: all passed")]


def test_english_first_puts_chinese_second(tmp_path):
    cfg = config(tmp_path, "languages = en, zh_CN")
    with opened(cfg) as hardware:
        screen = Screen(hardware.display, "vm-1", "Lobby B", b"0123456789abcdef", CLOUD, 5.0,
                        languages=cfg.screen.languages)
        screen.refresh(1_000_000.0, said("Offline - reconnecting"))
        assert screen.lines == [("en", "Lobby B"), ("en", "Scan to buy"), ("zh_CN", "扫码购买"),
                                ("en", "Offline - reconnecting"), ("zh_CN", "暂时离线，正在重新连接")]


def test_without_a_chinese_font_the_screen_says_so_and_shows_english(tmp_path, caplog):
    cfg = config(tmp_path, f"languages = zh_CN, en\nfont = {tmp_path / 'missing.ttc'}")
    with opened(cfg) as hardware, caplog.at_level(logging.ERROR):
        screen = Screen(hardware.display, "vm-1", "Lobby B", b"0123456789abcdef", CLOUD, 5.0,
                        languages=cfg.screen.languages, font=cfg.screen.font)
        assert "no font with the glyphs of zh_CN (install fonts-wqy-microhei" in caplog.text
        screen.refresh(1_000_000.0, said("Ready"))
        assert screen.lines == [("en", "Lobby B"), ("en", "Scan to buy"), ("en", "Ready")]


def test_every_text_the_controller_says_has_its_chinese():
    """Each English text the daemon and the drivers hand the screen has its translation in words.py."""
    import inspect
    import re

    import controller.daemon
    import hw.base
    import hw.mdb
    from controller.words import CATALOGUE

    source = "".join(inspect.getsource(m) for m in (controller.daemon, hw.base, hw.mdb))
    texts = set(re.findall(r'said\("([^"]+)"', source)) | set(re.findall(r'return "([^"]+)", \{', source))
    texts |= {"Self-test: all passed", "Self-test: FAILED - see the lines in red"}  # chosen, then said
    assert len(texts) >= 8, texts
    assert set(LANGUAGES) == {"en", "zh_CN"}
    assert sorted(t for t in texts if t not in CATALOGUE["zh_CN"]) == []
