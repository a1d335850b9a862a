"""The ledger's own partition on a card with a read-only root, made inside the image at provisioning time.

Raspberry Pi OS grows its root over the whole card at its first boot (``resize`` and
``init=/usr/lib/raspberrypi-sys-mods/firstboot`` in cmdline.txt, see ``pisettings.ROOT_GROWERS``), before
cloud-init runs, so no partition can be added on the machine later. Here the image file is made longer by the
data partition's size, an ext4 file system labelled ``DATA_LABEL`` is built in a temporary file (mkfs.ext4 on a
regular file: no loop device, no mount, no root), only its written blocks are copied into the new space, and the
MBR gets one more primary partition (sfdisk on the file). Everything that can fail is done before the image is
touched; if writing the boot partition fails afterwards, ``undo`` puts the MBR and the length back.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from cloud.provisioning.cloudinit import DATA_LABEL, CardError
from cloud.provisioning.sdcard import SECTOR, TargetError, read_partitions

MIB = 1 << 20
GIB = 1 << 30
DEFAULT_SIZE = GIB
MIN_SIZE = 64 * MIB  # an ext4 journal, and years of a busy machine's ledger
ALIGN = 4 * MIB  # where SD cards' erase blocks start, as Raspberry Pi OS aligns its own partitions
LINUX = 0x83
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*\Z", re.I)
_UNITS = {"": 1, "K": 1 << 10, "M": MIB, "G": GIB, "T": 1 << 40}


def parse_size(text: str, option: str) -> int:
    """A size such as 1G, 512M, 1.5GiB or a number of bytes; CardError naming the option otherwise."""
    found = _SIZE_RE.match(text or "")
    if not found:
        raise CardError(f"{option} {text!r}: give a size such as 1G, 512M or 32GB")
    return int(float(found.group(1)) * _UNITS[found.group(2).upper()])


def human(size: int) -> str:
    """A size as a technician reads it: 1 GiB, 96 MiB."""
    for unit, name in ((GIB, "GiB"), (MIB, "MiB")):
        if size >= unit:
            value = size / unit
            return f"{value:.0f} {name}" if value == int(value) else f"{value:.1f} {name}"
    return f"{size} bytes"


def ext4_label(path: str, offset: int) -> str | None:
    """The label of the ext4 file system at ``offset`` in the file, or None if there is none."""
    with open(path, "rb") as f:
        f.seek(offset + 1024)  # the superblock
        block = f.read(1024)
    if len(block) < 0x88 or block[0x38:0x3A] != b"\x53\xef":
        return None
    return block[0x78:0x88].split(b"\0", 1)[0].decode(errors="replace")


@dataclass
class DataPartition:
    """The ledger's partition of one image: found there already (kept, ledger and all), or to be added."""

    image: str
    size: int
    start: int  # bytes from the start of the image
    existing: bool = False
    _fs: str = ""
    _saved: tuple[int, bytes] | None = None

    @classmethod
    def plan(cls, image: str, size: int, card_size: int | None = None) -> "DataPartition":
        """Where the partition goes, checked against the MBR and the card; nothing is written."""
        parts = read_partitions(image)
        for part in parts[1:]:
            if part.type == LINUX and ext4_label(image, part.start) == DATA_LABEL:
                return cls(image, part.size, part.start, existing=True)
        if size < MIN_SIZE:
            raise CardError(f"--data-size {human(size)} is too small: the ledger's partition needs at least "
                            f"{human(MIN_SIZE)}")
        if len(parts) >= 4:
            raise TargetError(f"{image} has four primary partitions already: no room for the ledger's")
        used = max([p.start + p.size for p in parts] + [os.path.getsize(image)])
        start = -(-used // ALIGN) * ALIGN
        total = start + size
        if card_size is not None and total > card_size:
            raise CardError(f"the card ({human(card_size)}, --card-size) is too small: the image takes "
                            f"{human(start)} and the ledger's partition {human(size)} (--data-size), "
                            f"{human(total)} in all. Use a bigger card or a smaller --data-size")
        if total // SECTOR >= 1 << 32:
            raise CardError(f"--data-size {human(size)}: the image would pass 2 TiB, the most an MBR can address")
        return cls(image, size, start)

    def build(self, folder: str) -> None:
        """The ext4 file system, in a temporary file in ``folder``: the image is not touched."""
        if self.existing:
            return
        mkfs = shutil.which("mkfs.ext4") or ("/usr/sbin/mkfs.ext4" if os.path.exists("/usr/sbin/mkfs.ext4") else None)
        if mkfs is None:
            raise TargetError("mkfs.ext4 is not installed (it makes the ledger's partition): apt-get install e2fsprogs")
        if shutil.which("sfdisk") is None and not os.path.exists("/usr/sbin/sfdisk"):
            raise TargetError("sfdisk is not installed (it adds the ledger's partition): apt-get install fdisk")
        self._fs = os.path.join(folder, "vend-data.ext4")
        with open(self._fs, "wb") as f:
            f.truncate(self.size)
        # A regular file, so mke2fs neither needs root nor asks; the new space in the image is a hole (zeros), so
        # the inode tables it leaves to be zeroed lazily read as zeros there too.
        out = subprocess.run([mkfs, "-q", "-F", "-L", DATA_LABEL, "-m", "0", self._fs], capture_output=True, text=True)
        if out.returncode != 0:
            raise TargetError(f"mkfs.ext4 could not make the ledger's file system: {out.stderr.strip()}")

    def apply(self) -> None:
        """Lengthen the image, copy the file system in, add the partition to the MBR."""
        if self.existing:
            return
        with open(self.image, "rb") as f:
            self._saved = (os.path.getsize(self.image), f.read(SECTOR))
        try:
            with open(self.image, "r+b") as image:
                image.truncate(self.start + self.size)
                _copy_written_blocks(self._fs, image.fileno(), self.start)
                os.fsync(image.fileno())
            sfdisk = shutil.which("sfdisk") or "/usr/sbin/sfdisk"
            entry = f"start={self.start // SECTOR}, size={self.size // SECTOR}, type={LINUX:x}\n"
            out = subprocess.run([sfdisk, "--append", "--no-reread", "--no-tell-kernel", "-q", self.image],
                                 input=entry, capture_output=True, text=True)
            if out.returncode != 0:
                raise TargetError(f"sfdisk could not add the ledger's partition: {out.stderr.strip()}")
        except BaseException:
            self.undo()
            raise

    def undo(self) -> None:
        """The image's MBR and length as they were before ``apply``."""
        if self._saved is None:
            return
        length, mbr = self._saved
        with open(self.image, "r+b") as image:
            image.write(mbr)
            image.truncate(length)
            os.fsync(image.fileno())
        self._saved = None

    def number(self) -> int:
        """The partition's number in the MBR (after ``apply``)."""
        return next(p.number for p in read_partitions(self.image) if p.start == self.start)


def _copy_written_blocks(source: str, fd: int, offset: int) -> None:
    """Copy ``source`` into ``fd`` at ``offset``, skipping its holes: the new space reads as zeros already."""
    with open(source, "rb") as f:
        src, end, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < end:
            try:
                data = os.lseek(src, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: nothing but a hole from here on
                break
            hole = os.lseek(src, data, os.SEEK_HOLE)
            while data < hole:
                block = os.pread(src, min(4 * MIB, hole - data), data)
                os.pwrite(fd, block, offset + data)
                data += len(block)
            pos = hole
