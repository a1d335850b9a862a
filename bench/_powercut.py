"""The power cut of ``bench/powercut.c``: build the library, the environment that loads it, and the cut itself.

Bench and tests only (``bench/chaos.py``, ``tests/e2e/test_powercut.py``): a controller started with
``env(...)`` keeps a shadow of what its ledger has synced; ``restore(...)`` after a SIGKILL puts the synced
state back in place of the files, as a disk would hold it after the power went.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "powercut.c")


class PowerCutUnavailable(RuntimeError):
    """The library cannot be built here (no C compiler)."""


def build(workdir: str) -> str:
    """Compile the library into ``workdir``; its path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise PowerCutUnavailable("the power-cut mode needs a C compiler (Debian: apt install gcc) to build "
                                  "bench/powercut.c")
    out = os.path.join(workdir, "powercut.so")
    done = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", out, SOURCE, "-ldl", "-lpthread"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise PowerCutUnavailable(f"building {SOURCE} failed: {done.stderr.strip()}")
    return out


def env(library: str, database: str, shadow_dir: str) -> dict:
    """The environment that loads the library for the files of ``database`` (its WAL and journal too)."""
    os.makedirs(shadow_dir, exist_ok=True)
    return {"LD_PRELOAD": library, "VEND_POWERCUT_PREFIX": os.path.realpath(database),
            "VEND_POWERCUT_SHADOW": os.path.realpath(shadow_dir)}


def forget(shadow_dir: str) -> None:
    """Drop the shadows: the files as they are now count as durable (before a process starts on them)."""
    for path in glob.glob(os.path.join(shadow_dir, "*")):
        os.remove(path)


def restore(database: str, shadow_dir: str) -> list[str]:
    """The power went (the process is already dead): each file goes back to what was last synced, the
    WAL index goes (SQLite rebuilds it). Returns the files put back. Leaves no shadow behind."""
    put_back = []
    real = os.path.realpath(database)
    for shadow in glob.glob(os.path.join(shadow_dir, "*")):
        target = os.path.join(os.path.dirname(real), os.path.basename(shadow))
        if target.startswith(real):
            shutil.copyfile(shadow, target)
            put_back.append(target)
    try:
        os.remove(real + "-shm")
    except FileNotFoundError:
        pass
    forget(shadow_dir)
    return put_back
