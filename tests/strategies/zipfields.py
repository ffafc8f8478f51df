"""Every field of a zip's structures, by name and byte position: the end records, each central
directory entry, each local header and data descriptor. Found with Python's ``zipfile`` and the
zip specification (APPNOTE 4.3), independently of the reader under test, so that tests and the
fuzz can damage one field on purpose.

>>> import io, zipfile
>>> buf = io.BytesIO()
>>> with zipfile.ZipFile(buf, "w") as z:
...     z.writestr("a/data.pkl", b"x")
>>> [f.name for f in fields(buf.getvalue()) if f.where == "central a/data.pkl"][:3]
['signature', 'version made by', 'version needed']
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass

#: (name, offset, width) of each structure's fields (APPNOTE 4.3.7, 4.3.9, 4.3.12, 4.3.14-16)
CENTRAL = (("signature", 0, 4), ("version made by", 4, 2), ("version needed", 6, 2), ("flags", 8, 2),
           ("method", 10, 2), ("time", 12, 2), ("date", 14, 2), ("crc", 16, 4), ("compressed size", 20, 4),
           ("size", 24, 4), ("name length", 28, 2), ("extra length", 30, 2), ("comment length", 32, 2),
           ("disk", 34, 2), ("internal attributes", 36, 2), ("external attributes", 38, 4),
           ("header offset", 42, 4))
LOCAL = (("signature", 0, 4), ("version needed", 4, 2), ("flags", 6, 2), ("method", 8, 2), ("time", 10, 2),
         ("date", 12, 2), ("crc", 14, 4), ("compressed size", 18, 4), ("size", 22, 4),
         ("name length", 26, 2), ("extra length", 28, 2))
DESCRIPTOR = (("signature", 0, 4), ("crc", 4, 4), ("compressed size", 8, 4), ("size", 12, 4))
END = (("signature", 0, 4), ("disk", 4, 2), ("directory's disk", 6, 2), ("entries here", 8, 2),
       ("entries", 10, 2), ("directory size", 12, 4), ("directory offset", 16, 4), ("comment length", 20, 2))
LOCATOR = (("signature", 0, 4), ("zip64 end's disk", 4, 4), ("zip64 end offset", 8, 8), ("disks", 16, 4))
END64 = (("signature", 0, 4), ("record size", 4, 8), ("version made by", 12, 2), ("version needed", 14, 2),
         ("disk", 16, 4), ("directory's disk", 20, 4), ("entries here", 24, 8), ("entries", 32, 8),
         ("directory size", 40, 8), ("directory offset", 48, 8))


@dataclass(frozen=True)
class Field:
    where: str  # "end", "zip64 end", "locator", "central <record>", "local <record>", "descriptor <record>"
    name: str
    at: int
    width: int

    def get(self, blob: bytes) -> int:
        return int.from_bytes(blob[self.at:self.at + self.width], "little")

    def set(self, blob: bytes, value: int) -> bytes:
        """``blob`` with this field holding ``value`` (wrapped to its width)."""
        value %= 1 << 8 * self.width
        return blob[:self.at] + value.to_bytes(self.width, "little") + blob[self.at + self.width:]


def fields(blob: bytes) -> list[Field]:
    """Every field of every structure of the zip ``blob`` (a pristine one: found by its layout)."""
    out: list[Field] = []
    end = blob.rfind(b"PK\x05\x06")
    out += _at("end", END, end)
    locator = end - 20
    if locator >= 0 and blob[locator:locator + 4] == b"PK\x06\x07":
        out += _at("locator", LOCATOR, locator)
        (end64,) = struct.unpack_from("<Q", blob, locator + 8)
        out += _at("zip64 end", END64, end64)
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        infos = zf.infolist()
        central = zf.start_dir
    for info in infos:
        out += _at(f"central {info.filename}", CENTRAL, central)
        n, extra, comment = struct.unpack_from("<HHH", blob, central + 28)
        central += 46 + n + extra + comment
        local = info.header_offset
        out += _at(f"local {info.filename}", LOCAL, local)
        n, extra = struct.unpack_from("<HH", blob, local + 26)
        descriptor = local + 30 + n + extra + info.compress_size
        if info.flag_bits & 0x08 and blob[descriptor:descriptor + 4] == b"PK\x07\x08":
            out += _at(f"descriptor {info.filename}", DESCRIPTOR, descriptor)
    return out


def field(blob: bytes, where: str, name: str) -> Field:
    """The one field ``name`` of the structure ``where`` (``"central archive/data/1"``)."""
    found = [f for f in fields(blob) if f.where == where and f.name == name]
    if len(found) != 1:
        raise KeyError(f"{where} {name}: {len(found)} such fields")
    return found[0]


def _at(where: str, layout, start: int) -> list[Field]:
    return [Field(where, name, start + offset, width) for name, offset, width in layout]
