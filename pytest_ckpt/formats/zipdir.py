"""A zip's central directory read the way torch reads it: miniz's ``mz_zip_reader_read_central_dir``
and ``mz_zip_reader_file_stat`` (torch's third_party/miniz-3.0.2), field for field.

Every record pytest-ckpt checks is then the record ``torch.load`` reads, at the offset and with
the sizes it uses, and a directory miniz refuses is refused here, before anything is inflated.
Only the end records and the directory are read (a few kilobytes), never a record's data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

from ..errors import CheckpointError

END = struct.Struct("<4sHHHHIIH")  # 22: disk, directory's disk, entries here, entries, size, offset
LOCATOR = struct.Struct("<4sIQI")  # 20: the zip64 end record's disk, its offset, number of disks
END64 = struct.Struct("<4sQHHIIQQQQ")  # 56: size, versions, disks, entries here, entries, size, offset
CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")  # 46: one directory entry
END_SIG, LOCATOR_SIG, END64_SIG, CENTRAL_SIG = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06", b"PK\x01\x02"
U16, U32 = 0xFFFF, 0xFFFFFFFF
ZIP64_EXTRA = 0x0001
#: how far back from the end miniz looks for the end record (the longest zip comment, and the record)
SEARCH = U16 + END.size
MASKED = 0x2000  # "local header masked": central-directory encryption, which miniz refuses outright
#: ``pread(n, offset)``: up to ``n`` bytes of the archive from ``offset`` (a file's, or bytes in memory)
Pread = Callable[[int, int], bytes]


@dataclass(frozen=True)
class Record:
    """One directory entry as miniz's file stat gives it (zip64 sizes and offsets resolved)."""

    name: bytes
    index: int
    flags: int
    method: int
    crc: int
    compressed: int
    size: int
    header: int  # offset of the local header
    external: int  # external attributes: bit 0x10 is the MS-DOS directory bit

    @property
    def shown(self) -> str:
        return self.name.decode("utf-8", "replace")

    @property
    def is_directory(self) -> bool:
        # mz_zip_reader_is_file_a_directory: a trailing slash, or the MS-DOS directory attribute
        return self.name.endswith(b"/") or bool(self.external & 0x10)


@dataclass(frozen=True)
class Directory:
    """The records in directory order, and where the directory lies."""

    records: list[Record]
    start: int  # the directory's offset: every record lies before it
    end: int  # where the directory ends


def read(path, pread: Pread, size: int) -> Directory:
    """The directory of the zip whose bytes ``pread(n, offset)`` reads (``size`` bytes), or ``CheckpointError`` saying
    what miniz would refuse. A missing end record reads as a file cut short."""
    end = _find_end(pread, size)
    if end is None:
        raise CheckpointError(
            path, "truncated", f"zip central directory not found (file is {size} bytes; an interrupted save?)")
    _, disk, cd_disk, here, total, cd_size, cd_offset, _ = END.unpack(pread(END.size, end))
    zip64 = _zip64(path, pread, size, end)
    if zip64 is not None:
        (disks, record_size, disk, cd_disk, here, total, cd_size, cd_offset) = zip64
        if record_size < END64.size - 12:
            raise _damaged(path, f"its zip64 end record says it is {record_size} bytes long")
        if disks != 1:
            raise _damaged(path, f"its zip64 locator counts {disks} disks (torch reads single-disk archives)")
        if total > U32 or here > U32 or cd_size > U32:
            raise _damaged(path, f"its zip64 end record claims {total} entries in {cd_size} bytes")
    if total != here or (disk | cd_disk) and (disk != 1 or cd_disk != 1):
        raise _damaged(path, f"its end record describes a multi-disk archive ({here} of {total} entries on disk "
                             f"{disk}, the directory on disk {cd_disk}), which torch cannot read")
    if cd_size < total * CENTRAL.size or cd_offset + cd_size > size:
        raise _damaged(path, f"it claims {total} entries in {cd_size} bytes at offset {cd_offset}, "
                             f"which do not fit in the file ({size} bytes)")
    raw = pread(cd_size, cd_offset)
    records = _entries(path, raw, total, disk, size)
    return Directory(records, cd_offset, cd_offset + cd_size)


def _damaged(path, what: str) -> CheckpointError:
    return CheckpointError(path, "corrupted", f"the zip directory is damaged: {what}")


def _find_end(pread: Pread, size: int) -> int | None:
    """miniz's search for the end record: back from the end 4 KiB at a time, the last signature
    with a whole record after it, giving up about 64 KiB back."""
    if size < END.size:
        return None
    window = 4096
    cur = max(size - window, 0)
    while True:
        n = min(window, size - cur)
        buf = pread(n, cur)
        if len(buf) != n:
            return None
        last = size - END.size - cur  # the latest start that leaves a whole record
        if last >= 0:
            at = buf.rfind(END_SIG, 0, min(n, last + 4))
            if at >= 0:
                return cur + at
        if cur == 0 or size - cur >= SEARCH:
            return None
        cur = max(cur - (window - 3), 0)


def _zip64(path, pread: Pread, size: int, end: int) -> tuple | None:
    """The zip64 end record's fields, when a locator points at one (miniz then ignores the
    32-bit end record's counts, size and offset)."""
    if end < LOCATOR.size + END64.size:
        return None
    sig, _, offset, disks = LOCATOR.unpack(pread(LOCATOR.size, end - LOCATOR.size))
    if sig != LOCATOR_SIG:
        return None
    if offset > size - END64.size:
        raise _damaged(path, f"its zip64 locator points at offset {offset}, past the end of the file ({size} bytes)")
    raw = pread(END64.size, offset)
    if len(raw) != END64.size or raw[:4] != END64_SIG:
        return None
    _, record_size, _, _, disk, cd_disk, here, total, cd_size, cd_offset = END64.unpack(raw)
    return disks, record_size, disk, cd_disk, here, total, cd_size, cd_offset


def _entries(path, raw: bytes, total: int, this_disk: int, size: int) -> list[Record]:
    """Walk the directory as miniz does, with its checks, then stat each entry."""
    records = []
    p, left = 0, len(raw)
    for i in range(total):
        if left < CENTRAL.size or raw[p:p + 4] != CENTRAL_SIG:
            raise _damaged(path, f"entry {i} of {total} has no central header where the previous one ends")
        (_, _, _, flags, method, time, _, crc, compressed, usize, n, extra, comment, disk,
         _, external, header) = CENTRAL.unpack_from(raw, p)
        if 46 + n + extra + comment > left:
            raise _damaged(path, f"entry {i} runs past the end of the directory")
        name = raw[p + 46:p + 46 + n]
        who = f"zip record {name.decode('utf-8', 'replace')}"
        fields = raw[p + 46 + n:p + 46 + n + extra]
        big = _zip64_fields(fields, usize, compressed, header, strict=False) if extra and U32 in (
            usize, compressed, header) else (usize, compressed, header)
        if big is None:
            raise CheckpointError(path, "corrupted", f"{who}: its extra fields are damaged")
        s, c, h = big
        # miniz reads method and time as one 32-bit word here: a stored record with time 0
        if c != U32 and s != U32 and ((method | time << 16) == 0 and s != c or s and not c):
            raise CheckpointError(path, "corrupted", f"{who}: its directory entry gives sizes {c} (stored) "
                                                     f"and {s} (inflated) that cannot both be right")
        if disk == U16 or disk != this_disk and disk != 1:
            raise CheckpointError(path, "corrupted", f"{who}: its directory entry places it on disk {disk}")
        if c != U32 and h + 30 + c > size:
            raise CheckpointError(path, "corrupted", f"{who}: its directory entry claims {c} bytes from "
                                                     f"offset {h}, past the end of the file ({size} bytes)")
        if flags & MASKED:
            raise CheckpointError(path, "corrupted", f"{who}: its directory entry is marked encrypted (flag bit 13), "
                                                     "which torch refuses")
        # the file stat: zip64 fields read again, strictly
        stat = _zip64_fields(fields, usize, compressed, header, strict=True) if U32 in (
            usize, compressed, header) else (usize, compressed, header)
        if stat is None:
            raise CheckpointError(path, "corrupted", f"{who}: its zip64 extra field is damaged")
        records.append(Record(name, i, flags, method, crc, stat[1], stat[0], stat[2], external))
        p += 46 + n + extra + comment
        left -= 46 + n + extra + comment
    return records


def _zip64_fields(extra: bytes, usize: int, compressed: int, header: int, *, strict: bool):
    """``(size, compressed size, header offset)`` with the 0xFFFFFFFF ones taken from the zip64
    extra field, or ``None`` where miniz refuses the extra fields. ``strict``: the file stat's
    reading (a missing value refused), else the directory walk's (a missing value kept)."""
    p, left = 0, len(extra)
    while left:
        if left < 4:
            return None
        fid, n = struct.unpack_from("<HH", extra, p)
        if n + 4 > left:
            return None
        if fid == ZIP64_EXTRA:
            values, q, room = [usize, compressed, header], p + 4, n if strict else left - 4
            for k in range(3):
                if values[k] == U32:
                    if room < 8:
                        if strict:
                            return None
                        break
                    values[k] = struct.unpack_from("<Q", extra, q)[0]
                    q, room = q + 8, room - 8
            return tuple(values)
        p, left = p + 4 + n, left - 4 - n
    return usize, compressed, header
