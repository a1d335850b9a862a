"""The armhf wheelhouse from an extra wheel index (``--wheel-index``, piwheels in the field): pip's resolver, run
by the wheelhouse's real ``pip download``, against a local simple index (PEP 503) serving wheels built here with
the Pi's platform tags. The default index is pointed at an empty local one, so nothing reaches PyPI."""

import hashlib
import os
import re

import pytest
from werkzeug.wrappers import Response

from cloud.provisioning import wheelhouse
from cloud.provisioning.cloudinit import CardError
from tests.cloud.provisioning.fake_wheels import PILLOW, PURE, fake_wheel
from tests.cloud.provisioning.test_provision import (PASSWORD_HASH, fleet, hardware, listing, make_image,  # noqa: F401
                                                     sha256, wheel)

TRIXIE_ARMHF = wheelhouse.Target("trixie", "armhf")
ARMV7L = f"pillow-{PILLOW}-cp313-cp313-linux_armv7l.whl"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture
def index(httpserver, tmp_path, monkeypatch):
    """A piwheels-like simple index on a local port, with the wheels put in the folder it returns; pip's default
    index is an empty one on the same server."""
    files = tmp_path / "index-files"
    files.mkdir()
    asked = []

    def project(request):
        name = request.path.strip("/").split("/")[-1]
        asked.append(name)
        found = sorted(f for f in os.listdir(files) if _canonical(f.split("-")[0]) == name)
        if not found:
            return Response("no such project", status=404)
        links = "".join(f'<a href="/files/{f}#sha256={hashlib.sha256((files / f).read_bytes()).hexdigest()}">{f}</a>'
                        for f in found)
        return Response(f"<!DOCTYPE html><html><body>{links}</body></html>", content_type="text/html")

    def download(request):
        return Response((files / os.path.basename(request.path)).read_bytes(), content_type="application/octet-stream")

    httpserver.expect_request(re.compile(r"^/simple/[^/]+/?$")).respond_with_handler(project)
    httpserver.expect_request(re.compile(r"^/files/[^/]+$")).respond_with_handler(download)
    httpserver.expect_request(re.compile(r"^/empty/.*$")).respond_with_data("not here", status=404)
    monkeypatch.setenv("PIP_INDEX_URL", httpserver.url_for("/empty/"))
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    return httpserver.url_for("/simple/"), files, asked


def serve(files, *pillow_tags):
    for name, version in PURE:
        fake_wheel(str(files), name, version)
    for tag in pillow_tags:
        fake_wheel(str(files), "pillow", PILLOW, tag)


def test_the_armhf_wheels_come_from_the_extra_index_and_stay_in_the_wheelhouse(index, wheel, tmp_path):
    url, files, asked = index
    serve(files, "cp313-cp313-manylinux_2_28_aarch64", "cp313-cp313-manylinux_2_28_x86_64",
          "cp311-cp311-linux_armv7l", "cp313-cp313-linux_armv7l")
    folder = str(tmp_path / "wheelhouse")
    got = sorted(os.path.basename(p) for p in wheelhouse.wheels_for(folder, wheel, TRIXIE_ARMHF, fetch=True,
                                                                    indexes=(url,)))
    # pip's resolver took the one pillow built for a 32-bit Pi's CPython 3.13, nothing for another CPU.
    assert [n for n in got if n.startswith("pillow")] == [ARMV7L]
    assert {n.split("-")[0] for n in got} == {"paho_mqtt", "sqlite_utils", "qrcode", "pyserial", "gpiozero", "pillow"}
    assert "pillow" in asked
    # Kept: the next card is made from the wheelhouse with no index at all.
    assert sorted(os.listdir(folder)) == got
    assert sorted(os.path.basename(p) for p in wheelhouse.wheels_for(folder, wheel, TRIXIE_ARMHF, fetch=False)) == got


def test_an_index_without_the_pis_platform_is_named_with_the_package_and_platform(index, wheel, tmp_path):
    url, files, _ = index
    serve(files, "cp313-cp313-manylinux_2_28_aarch64")  # as on PyPI: no armv7l pillow
    with pytest.raises(CardError) as e:
        wheelhouse.wheels_for(str(tmp_path / "wheelhouse"), wheel, TRIXIE_ARMHF, fetch=True, indexes=(url,))
    text = str(e.value)
    assert text.startswith("fetching the wheels for Raspberry Pi OS trixie armhf (CPython 3.13, armv7l) failed: "
                           "pillow>=10.1")
    assert f"on the package index or {url}" in text
    assert f"--wheel-index {wheelhouse.PIWHEELS}" in text


def test_a_wheel_index_that_is_not_a_url_is_refused():
    with pytest.raises(CardError, match="--wheel-index 'piwheels': give the URL of a simple package index"):
        wheelhouse.check_indexes(["piwheels"])


def _provision(fleet, image, hardware, wheel, wheelhouse_dir, url):
    return fleet.vendctl("provision", "--machine", "m-pi", "--image", image, "--hardware", hardware, "--wheel", wheel,
                         "--password-hash", PASSWORD_HASH, "--pi-arch", "armhf", "--wheelhouse", wheelhouse_dir,
                         "--wheel-index", url)


def test_vendctl_makes_an_armhf_card_from_the_extra_index(index, fleet, hardware, wheel, tmp_path):
    url, files, _ = index
    serve(files, "cp313-cp313-linux_armv7l")
    image = make_image(tmp_path / "raspios-armhf.img")
    out = _provision(fleet, image, hardware, wheel, str(tmp_path / "wh"), url)
    assert out.returncode == 0, out.stderr
    assert ARMV7L in listing(image, "::/vend/wheels")
    assert "Raspberry Pi OS trixie armhf (Python 3.13)" in out.stdout


def test_vendctl_leaves_the_image_as_it_was_when_the_index_lacks_the_platform(index, fleet, hardware, wheel,
                                                                              tmp_path):
    url, files, _ = index
    serve(files, "cp313-cp313-manylinux_2_28_aarch64")
    image = make_image(tmp_path / "raspios-armhf.img")
    before = sha256(image)
    out = _provision(fleet, image, hardware, wheel, str(tmp_path / "wh"), url)
    assert out.returncode == 1 and out.stdout == ""
    assert "pillow>=10.1" in out.stderr and "armv7l" in out.stderr and "Nothing was written" in out.stderr
    assert sha256(image) == before
