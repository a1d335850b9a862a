"""The real DEX files in shared/dex/ for the tests, and a later read of the Jofemar machine made from its file."""

from __future__ import annotations

import os

from dex.crc import g85
from tests.tools import REPO

SHARED = str(REPO.parent / "shared" / "dex")
if not os.path.isdir(SHARED):  # a worktree of /work/main: shared/ stands beside main
    SHARED = "/work/shared/dex"


def path(name: str) -> str:
    return os.path.join(SHARED, name)


def raw(name: str) -> bytes:
    with open(path(name), "rb") as f:
        return f.read()


def jofemar_next_day() -> bytes:
    """The Jofemar machine read a day later, having sold two more of selection 12 at 3.80 (one for cash,
    one cashless): every total moved by what a machine would count, and the G85 it would write."""
    text = raw("jofemar-sample.dex").decode()
    for a, b in (("ID5*20240415*150421", "ID5*20240416*090000"), ("VA1*143500*423", "VA1*144260*425"),
                 ("CA2*128250*382", "CA2*128630*383"), ("DA2*15250*41", "DA2*15630*42"),
                 ("PA2*23*8740*23*8740", "PA2*25*9500*25*9500"),
                 ("PA7*12*CA*0*380*22*8360", "PA7*12*CA*0*380*23*8740"),
                 ("PA7*12*DA*0*380*1*380", "PA7*12*DA*0*380*2*760")):
        assert a in text
        text = text.replace(a, b)
    lines = text.split("\n")
    assert lines[143].startswith("G85*")
    lines[143] = "G85*" + g85(lines[1:143])  # ST (line 2) through the line before G85 (line 144)
    return "\n".join(lines).encode()
