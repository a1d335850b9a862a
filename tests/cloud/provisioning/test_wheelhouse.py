"""The offline card's wheelhouse: what pip's resolver takes from it for each Raspberry Pi OS and CPU, what it
refuses, and (one test, needing the package index) a real fetch for a Pi."""

import os
import zipfile

import pytest

from cloud.provisioning import wheelhouse
from cloud.provisioning.cli import build_wheel
from cloud.provisioning.cloudinit import CardError
from tests.cloud.provisioning.fake_wheels import PILLOW, fake_wheel, make_wheelhouse
from tests.tools import need_index

TRIXIE_ARM64 = wheelhouse.Target("trixie", "arm64")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(str(tmp_path_factory.mktemp("wheel")))


def names(paths):
    return sorted(os.path.basename(p) for p in paths)


def test_the_requirements_are_the_controllers_and_gpiozero_but_no_pin_library(wheel):
    reqs = wheelhouse.requirements(wheel)
    assert reqs[0] == f"{wheel}[controller]"
    assert [r for r in reqs[1:] if r.lower().startswith(("lgpio", "rpi"))] == []
    assert any(r.startswith("gpiozero") for r in reqs[1:])


@pytest.mark.parametrize("release, python", [("trixie", "cp313"), ("bookworm", "cp311")])
def test_each_release_gets_the_pillow_built_for_its_python(wheel, tmp_path, release, python):
    folder = make_wheelhouse(str(tmp_path / "wh"))
    fake_wheel(folder, "pillow", PILLOW, f"{python}-{python}-manylinux_2_28_x86_64")  # this computer's: never
    got = names(wheelhouse.wheels_for(folder, wheel, wheelhouse.Target(release, "arm64"), fetch=False))
    assert f"pillow-{PILLOW}-{python}-{python}-manylinux_2_28_aarch64.whl" in got
    assert not any("x86_64" in n for n in got) and len([n for n in got if n.startswith("pillow")]) == 1
    assert {n.split("-")[0] for n in got} == {"paho_mqtt", "sqlite_utils", "qrcode", "pyserial", "gpiozero", "pillow"}


def test_a_wheelhouse_without_the_pis_platform_is_refused_naming_what_is_missing(wheel, tmp_path):
    folder = make_wheelhouse(str(tmp_path / "wh"))  # pillow for arm64 only
    with pytest.raises(CardError) as e:
        wheelhouse.wheels_for(folder, wheel, wheelhouse.Target("bookworm", "armhf"), fetch=False)
    assert str(e.value).startswith(f"the wheelhouse {folder} has no wheel of pillow>=10.1")
    assert "Raspberry Pi OS bookworm armhf (CPython 3.11, armv7l)" in str(e.value)


def test_a_wheel_built_on_a_pi_counts_for_its_platform(wheel, tmp_path):
    """piwheels tags its builds linux_armv7l: a technician may bring them for a 32-bit Pi."""
    folder = make_wheelhouse(str(tmp_path / "wh"), pillow_tags=("cp311-cp311-linux_armv7l",))
    got = names(wheelhouse.wheels_for(folder, wheel, wheelhouse.Target("bookworm", "armhf"), fetch=False))
    assert f"pillow-{PILLOW}-cp311-cp311-linux_armv7l.whl" in got


def test_no_wheelhouse_and_no_download_is_refused(wheel, tmp_path):
    with pytest.raises(CardError, match="no wheelhouse .*without --no-download"):
        wheelhouse.wheels_for(str(tmp_path / "none"), wheel, TRIXIE_ARM64, fetch=False)


def test_a_requirement_that_pulls_in_a_pin_library_is_refused(tmp_path):
    """The lgpio trap: PyPI's only ARM lgpio wheel is an empty placeholder."""
    folder = make_wheelhouse(str(tmp_path / "wh"))
    fake_wheel(folder, "lgpio", "0.0.0.2", "py3-none-any")
    own = fake_wheel(str(tmp_path), "vend_fleet", "0.1.0", requires=('pyserial>=3.5; extra == "controller"',
                                                                     'lgpio; extra == "controller"'))
    with pytest.raises(CardError, match="pull in lgpio, a pin library that must come from Raspberry Pi OS"):
        wheelhouse.resolve(folder, own, TRIXIE_ARM64)


@pytest.mark.index
def test_a_real_wheelhouse_for_a_64_bit_pi_is_fetched_and_cached(wheel, tmp_path):
    need_index()
    folder = str(tmp_path / "cache")
    got = wheelhouse.wheels_for(folder, wheel, TRIXIE_ARM64, fetch=True)
    pillow = [n for n in names(got) if n.lower().startswith("pillow-")]
    assert len(pillow) == 1 and "-cp313-cp313-" in pillow[0] and "aarch64" in pillow[0], pillow
    for path in got:
        assert zipfile.ZipFile(path).testzip() is None
        assert not os.path.basename(path).lower().startswith(("lgpio", "rpi")), path
    # Cached: the same set again with the index out of reach.
    assert wheelhouse.wheels_for(folder, wheel, TRIXIE_ARM64, fetch=False) == got
