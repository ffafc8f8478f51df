"""Mutation operators of the hostile-input fuzz that know a format's structure: a zip field set to
another value, a record compressed (or a decompression bomb), a safetensors header field given
another JSON type, and a directory checkpoint with a file removed, torn, or swapped with the same
file of a checkpoint from another step.

Each operator draws from a seeded ``random.Random`` and returns a :class:`Case`; applying it to a
checkpoint's files (``{name: bytes}``) gives the damaged files. The byte-level damage (cut,
flipped, zeroed, trailing bytes) is :class:`~tests.strategies.corruption.Corruption`.
"""

from __future__ import annotations

import functools
import io
import json
import random
import struct
import zipfile
from dataclasses import dataclass
from typing import Callable

from tests.strategies import corruption, zipfields

#: the structure-aware operators, by the kind of checkpoint they apply to
ZIP_KINDS = ("zip field", "compressed")
HEADER_KINDS = ("header field",)
DIRECTORY_KINDS = ("removed", "torn", "swapped")


@dataclass(frozen=True)
class Case:
    """One damaged checkpoint: ``kind`` of damage, the ``file`` it hits, what it did (``detail``)."""

    kind: str
    file: str
    detail: str
    change: Callable[[dict[str, bytes]], dict[str, bytes]]

    def apply(self, files: dict[str, bytes]) -> dict[str, bytes]:
        return self.change(dict(files))

    def __repr__(self) -> str:
        return f"{self.kind} {self.file}: {self.detail}"


def byte_case(name: str, c: corruption.Corruption) -> Case:
    """A byte-level corruption of one file, as a case."""
    def change(files):
        files[name] = c.apply(files[name])
        return files
    return Case(c.kind, name, repr(c), change)


def replaced(name: str, kind: str, detail: str, blob: bytes | None) -> Case:
    """The case that replaces file ``name`` with ``blob`` (``None``: removes it)."""
    def change(files):
        if blob is None:
            files.pop(name, None)
        else:
            files[name] = blob
        return files
    return Case(kind, name, detail, change)


# -- zip ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _fields(blob: bytes) -> tuple[zipfields.Field, ...]:
    return tuple(zipfields.fields(blob))


def zip_field(rng: random.Random, name: str, blob: bytes) -> Case:
    """One field of the end records, a directory entry, a local header or a data descriptor set to
    a drawn value: one bit flipped, zero, all ones, one more or less, anything."""
    f = rng.choice(_fields(blob))
    old, top = f.get(blob), 1 << 8 * f.width
    new = rng.choice((old ^ 1 << rng.randrange(8 * f.width), 0, top - 1, old + 1, old - 1, rng.randrange(top))) % top
    return replaced(name, "zip field", f"{f.where} {f.name}: {old} -> {new}", f.set(blob, new))


def compressed(rng: random.Random, name: str, blob: bytes) -> Case:
    """The archive rewritten with one record deflated: any record (tensor data too), or data.pkl
    followed by megabytes of zeros (torch stops at the pickle's end: a bomb it reads)."""
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        infos = zf.infolist()
        records = [(info.filename, zf.read(info)) for info in infos]
    target = rng.choice([n for n, _ in records])
    bomb = rng.random() < 0.3
    if bomb:
        target = next(n for n, _ in records if n.endswith("/data.pkl"))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for record, data in records:
            if record == target and bomb:
                data += bytes(rng.randint(1, 4) << 20)
            method = zipfile.ZIP_DEFLATED if record == target else zipfile.ZIP_STORED
            zf.writestr(zipfile.ZipInfo(record), data, compress_type=method)
    detail = f"{target} deflated" + (" after megabytes of zeros (a bomb)" if bomb else "")
    return replaced(name, "compressed", detail, out.getvalue())


# -- safetensors headers ----------------------------------------------------------------------

def header_field(rng: random.Random, name: str, blob: bytes) -> Case:
    """One field of a safetensors header given another JSON type or spelling, named twice, or
    left out; or the header's names and whitespace changed (the data bytes stay)."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])  # the pristine file's own header: trusted
    data = blob[8 + n:]
    items = [(json.dumps(k), json.dumps(v, separators=(",", ":"))) for k, v in header.items()]
    tensors = [i for i, (k, _) in enumerate(items) if k != '"__metadata__"']
    i = rng.choice(tensors)
    key, info = items[i][0], header[json.loads(items[i][0])]
    field = rng.choice(("dtype", "shape", "data_offsets"))
    value = info[field]
    edits: dict[str, Callable[[], str]] = {
        "true": lambda: "true", "false": lambda: "false", "null": lambda: "null", "a string": lambda: '"8"',
        "an empty list": lambda: "[]", "an object": lambda: "{}",
        "a float": lambda: _numbers(value, lambda x: f"{x}.0", rng),
        "an exponent": lambda: _numbers(value, lambda x: f"{x}e0", rng),
        "-0": lambda: _numbers(value, lambda x: "-0" if x == 0 else str(x), rng, all_=True),
        "a bool for 0 or 1": lambda: _numbers(value, lambda x: {0: "false", 1: "true"}.get(x, str(x)), rng, all_=True),
        "a negative number": lambda: _numbers(value, lambda x: str(-x - 1), rng),
        "a number past 2**64": lambda: _numbers(value, lambda x: str(x + 2**64), rng),
        "one more element": lambda: _numbers(value, str, rng, extra=True),
    }
    how = rng.choice((*edits, "named twice", "left out", "an unknown field beside it", "the metadata named twice",
                      "a lone surrogate in the name", "an escaped name", "the entry twice", "whitespace first"))
    fields = {k: json.dumps(v, separators=(",", ":")) for k, v in info.items()}
    top = list(items)
    if how in edits:
        fields[field] = edits[how]()
    elif how == "named twice":
        top[i] = (key, _object(fields, extra=f'"{field}":{fields[field]}'))
    elif how == "left out":
        del fields[field]
    elif how == "an unknown field beside it":
        top[i] = (key, _object(fields, extra='"x":-0'))
    elif how == "the metadata named twice":
        top.insert(0, ('"__metadata__"', '{"format":"pt"}'))
    elif how == "a lone surrogate in the name":
        top[i] = (key[:-1] + '\\ud800"', _object(fields))
    elif how == "an escaped name":
        top[i] = ('"\\u%04x' % ord(json.loads(key)[0]) + key[2:] if len(key) > 2 else key, _object(fields))
    elif how == "the entry twice":
        top.insert(i, (key, _object(fields)))
    if how in edits or how == "left out":
        top[i] = (key, _object(fields))
    text = "{" + ",".join(f"{k}:{v}" for k, v in top) + "}"
    if how == "whitespace first":
        text = " \n\t" + text
    raw = text.encode("utf-8", "surrogatepass")
    raw += b" " * (-len(raw) % 8)
    detail = f"{json.loads(key)!r} {field}: {how}"
    return replaced(name, "header field", detail, struct.pack("<Q", len(raw)) + raw + data)


def _object(fields: dict[str, str], extra: str = "") -> str:
    return "{" + ",".join([*(f'"{k}":{v}' for k, v in fields.items()), *([extra] if extra else [])]) + "}"


def _numbers(value, spell: Callable[[int], str], rng: random.Random, *, all_: bool = False, extra: bool = False) -> str:
    """``value`` (a string or a list of integers) spelt with one (or every) number changed."""
    if not isinstance(value, list):
        return json.dumps(value)
    parts = [str(x) for x in value]
    if extra:
        return "[" + ",".join([*parts, "0"]) + "]"
    if not parts:
        return "[" + spell(0) + "]"
    for j in (range(len(parts)) if all_ else [rng.randrange(len(parts))]):
        parts[j] = spell(value[j])
    return "[" + ",".join(parts) + "]"


# -- directories ----------------------------------------------------------------------------

def directory(rng: random.Random, files: dict[str, bytes], other: dict[str, bytes]) -> Case:
    """One file of a directory checkpoint removed, torn (cut at any offset), or swapped with the
    same file of ``other``, a checkpoint of another step."""
    kind = rng.choice(DIRECTORY_KINDS)
    name = rng.choice(sorted(files))
    if kind == "removed":
        return replaced(name, kind, "removed", None)
    if kind == "torn":
        at = rng.randrange(max(len(files[name]), 1))
        return replaced(name, kind, f"cut at {at} of {len(files[name])} bytes", files[name][:at])
    if name not in other or other[name] == files[name]:
        name = rng.choice(sorted(n for n in files if n in other and other[n] != files[n]))
    return replaced(name, kind, "from the checkpoint of another step", other[name])
