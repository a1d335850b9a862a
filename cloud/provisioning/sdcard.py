"""Writing files onto a Raspberry Pi's boot partition: inside a disk image (no root, no mount) or a mounted card.

For an image, the partition table (MBR) is read here, the FAT boot partition's bytes are copied to a
temporary file, mtools writes into that copy, and only the blocks that changed are written back at the end.
Anything that fails before that last step leaves the image exactly as it was.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass

SECTOR = 512
CHUNK = 1 << 20
FAT_TYPES = {0x01: "FAT12", 0x04: "FAT16", 0x06: "FAT16", 0x0B: "FAT32", 0x0C: "FAT32 (LBA)", 0x0E: "FAT16 (LBA)"}
PI_BOOT_FILES = ("config.txt", "cmdline.txt")  # what every Raspberry Pi OS boot partition has
COMPRESSED = {b"\xfd7zXZ\x00": "xz (unpack it: xz -dk FILE)", b"PK\x03\x04": "zip (unzip it)",
              b"\x1f\x8b": "gzip (gunzip it)"}


class TargetError(Exception):
    """A boot partition that cannot be written; the text says why and what to do."""


@dataclass(frozen=True)
class Partition:
    """One primary partition of an MBR."""

    number: int
    type: int
    start: int  # bytes from the start of the image
    size: int


def read_partitions(path: str) -> list[Partition]:
    """The primary partitions in the image's MBR."""
    with open(path, "rb") as f:
        sector = f.read(SECTOR)
    for magic, what in COMPRESSED.items():
        if sector.startswith(magic):
            raise TargetError(f"{path} is compressed with {what}, then give the .img file")
    if len(sector) < SECTOR or sector[510:512] != b"\x55\xaa":
        raise TargetError(f"{path} has no partition table (no MBR): it is not a disk image. A Raspberry Pi OS "
                          "image is a .img file with a FAT boot partition")
    parts = []
    for i in range(4):
        entry = sector[446 + 16 * i:462 + 16 * i]
        start, count = int.from_bytes(entry[8:12], "little"), int.from_bytes(entry[12:16], "little")
        if entry[4] and count:
            parts.append(Partition(i + 1, entry[4], start * SECTOR, count * SECTOR))
    if any(p.type == 0xEE for p in parts):
        raise TargetError(f"{path} has a GPT partition table; Raspberry Pi OS images use MBR, and only MBR is read")
    return parts


def find_boot_partition(path: str) -> Partition:
    """The first FAT partition, checked to hold a FAT file system that lies inside the image."""
    parts = read_partitions(path)
    fat = [p for p in parts if p.type in FAT_TYPES]
    if not fat:
        found = ", ".join(f"{p.number} (type 0x{p.type:02x})" for p in parts) or "none"
        raise TargetError(f"{path} has no FAT partition (partitions: {found}); a Raspberry Pi OS image starts "
                          "with a FAT32 boot partition")
    part = fat[0]
    if part.start + part.size > os.path.getsize(path):
        raise TargetError(f"{path}: partition {part.number} ends past the end of the file: is the image complete?")
    with open(path, "rb") as f:
        f.seek(part.start)
        boot = f.read(SECTOR)
    if boot[510:512] != b"\x55\xaa" or not (boot[54:57] == b"FAT" or boot[82:87] == b"FAT32"):
        raise TargetError(f"{path}: partition {part.number} is marked FAT but holds no FAT file system")
    return part


def check_not_marked_read_only(path: str, what: str) -> None:
    """Refuse what is marked read-only, by its mode or its mount. Root could write past a mode of 0555 or
    0444, but a file or folder marked so was meant to stay as it is."""
    st = os.stat(path)
    if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise TargetError(f"{what} {path} is read-only (mode {stat.S_IMODE(st.st_mode):04o}); nothing was written")
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        raise TargetError(f"{what} {path} is on a read-only file system (a card's lock switch, or mounted ro); "
                          "nothing was written")


def mtools_env() -> dict:
    """The environment mtools runs in: no user's mtoolsrc, small FAT32s allowed."""
    # A FAT32 smaller than the standard minimum (test images, small boot partitions) is still FAT32 to a Pi.
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}


def _text(content: str | bytes, what: str) -> str:
    if isinstance(content, bytes):
        try:
            content = content.decode()
        except UnicodeDecodeError:
            raise TargetError(f"{what} is not a text file") from None
    return content.replace("\r\n", "\n")


def mtools(tool: str, *args: str) -> str:
    """Run one mtools command; its output, or TargetError with what it said."""
    if shutil.which(tool) is None:
        raise TargetError(f"{tool} is not installed: apt-get install mtools")
    out = subprocess.run([tool, *args], capture_output=True, text=True, env=mtools_env())
    if out.returncode != 0:
        raise TargetError(f"{tool} {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


class ImageTarget:
    """The boot partition inside a disk image file."""

    def __init__(self, path: str):
        self.path = path

    def describe(self) -> str:
        """The image and where its boot partition is, for the summary."""
        return f"{self.path} (boot partition {self.part.number} at {self.part.start // CHUNK} MiB)"

    def check(self) -> None:
        """Everything that can be found wrong before writing: a file, writable, with a Pi boot partition."""
        if not os.path.isfile(self.path):
            raise TargetError(f"no image file {self.path}")
        check_not_marked_read_only(self.path, "image")
        try:
            open(self.path, "r+b").close()
        except OSError as e:
            raise TargetError(f"cannot write to the image {self.path}: {e.strerror}") from None
        self.part = find_boot_partition(self.path)
        names = self._listing(self._drive(), "::/")
        if not any(name in names for name in PI_BOOT_FILES):
            raise TargetError(f"{self.path}: the FAT partition has no {' or '.join(PI_BOOT_FILES)}: it is not a "
                              "Raspberry Pi OS boot partition")

    def read(self, name: str) -> str | None:
        """A text file at the partition's root, or None if it has none."""
        if name.lower() not in self._listing(self._drive(), "::/"):
            return None
        return _text(mtools("mtype", "-i", self._drive(), f"::/{name}"), f"{self.path}: {name}")

    def _drive(self, image: str | None = None, offset: int | None = None) -> str:
        return f"{image or self.path}@@{self.part.start if offset is None else offset}"

    def write(self, files: dict[str, bytes], clear: tuple[str, ...] = ()) -> None:
        """Write ``files`` (name relative to the partition's root -> content) in one step at the end; in the
        folders ``clear`` names, files not among them are removed (a previous card's wheels)."""
        folder = os.path.dirname(os.path.abspath(self.path))
        with tempfile.TemporaryDirectory(prefix=".vend-provision-",
                                         dir=folder if os.access(folder, os.W_OK) else None) as tmp:
            copy = os.path.join(tmp, "boot.img")
            with open(self.path, "rb") as src, open(copy, "wb") as dst:
                src.seek(self.part.start)
                left = self.part.size
                while left:
                    block = src.read(min(CHUNK, left))
                    dst.write(block)
                    left -= len(block)
            drive = self._drive(copy, 0)
            folders = sorted({os.path.dirname(name) for name in files} - {""})
            for sub in folders:
                parent, name = os.path.split(sub)
                if name.lower() not in self._listing(drive, f"::/{parent}"):
                    mtools("mmd", "-i", drive, f"::/{sub}")
            for sub in clear:
                parent, name = os.path.split(sub)
                if name.lower() not in self._listing(drive, f"::/{parent}"):
                    continue
                keep = {os.path.basename(name).lower() for name in files if os.path.dirname(name) == sub}
                for old in self._listing(drive, f"::/{sub}") - keep:
                    mtools("mdel", "-i", drive, f"::/{sub}/{old}")
            for name, content in files.items():
                local = os.path.join(tmp, "file")
                with open(local, "wb") as f:
                    f.write(content)
                mtools("mcopy", "-o", "-i", drive, local, f"::/{name}")
            self._write_back(copy)

    @staticmethod
    def _listing(drive: str, folder: str) -> set[str]:
        """Names in a folder of the partition, in lower case (FAT does not tell case apart)."""
        out = mtools("mdir", "-b", "-i", drive, folder)
        return {line.rstrip("/").rsplit("/", 1)[-1].lower() for line in out.splitlines() if line.strip()}

    def _write_back(self, copy: str) -> None:
        """Write into the image only the blocks of the partition that differ from the copy."""
        with open(copy, "rb") as new, open(self.path, "r+b") as image:
            offset = 0
            while True:
                block = new.read(CHUNK)
                if not block:
                    break
                image.seek(self.part.start + offset)
                if image.read(len(block)) != block:
                    image.seek(self.part.start + offset)
                    image.write(block)
                offset += len(block)
            image.flush()
            os.fsync(image.fileno())


class DirTarget:
    """The boot partition of a card already written and mounted (``--boot-dir``)."""

    def __init__(self, path: str):
        self.path = path

    def describe(self) -> str:
        """The folder, for the summary."""
        return self.path

    def check(self) -> None:
        """A folder, writable, not marked read-only, with a Pi's boot files in it."""
        if not os.path.isdir(self.path):
            raise TargetError(f"no folder {self.path}: give --boot-dir the mounted boot partition (bootfs)")
        check_not_marked_read_only(self.path, "boot folder")
        if not any(os.path.exists(os.path.join(self.path, name)) for name in PI_BOOT_FILES):
            raise TargetError(f"{self.path} is not a Raspberry Pi OS boot partition (no "
                              f"{' or '.join(PI_BOOT_FILES)}): give --boot-dir the card's mounted bootfs")
        try:
            fd, probe = tempfile.mkstemp(prefix=".vend-write-test-", dir=self.path)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise TargetError(f"cannot write to the boot folder {self.path}: {e.strerror}; nothing was written") from None

    def read(self, name: str) -> str | None:
        """A text file at the partition's root, or None if it has none."""
        path = os.path.join(self.path, name)
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            return _text(f.read(), path)

    def write(self, files: dict[str, bytes], clear: tuple[str, ...] = ()) -> None:
        """Write every file under a temporary name first, then rename them all into place, then remove what else
        the folders ``clear`` names hold. Mode 0600 where the file system keeps modes (a mounted FAT takes its
        modes from the mount and ignores this)."""
        staged = []
        try:
            for name, content in files.items():
                final = os.path.join(self.path, name)
                os.makedirs(os.path.dirname(final), exist_ok=True)
                tmp = final + ".vend-new"
                with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                    f.write(content)
                    f.flush()
                    os.fsync(f.fileno())
                staged.append((tmp, final))
            for tmp, final in staged:
                os.replace(tmp, final)
            for sub in clear:
                keep = {os.path.basename(name) for name in files if os.path.dirname(name) == sub}
                folder = os.path.join(self.path, sub)
                for old in set(os.listdir(folder) if os.path.isdir(folder) else ()) - keep:
                    os.unlink(os.path.join(folder, old))
        finally:
            for tmp, _ in staged:
                if os.path.exists(tmp):
                    os.unlink(tmp)
