"""A safetensors header read the way the safetensors library (Rust, serde_json) reads it, where
Python's ``json`` is more lenient: UTF-8 only, no ``NaN``/``Infinity``, no number out of a
double's range, no lone surrogate escape, no struct field named twice in one object, and ``-0``
read as the float it is there (so that it is no integer).

The header is a map of objects; a field of those objects (or the map's own ``__metadata__``) may
appear once per object, other names keep their last value, as in serde's maps. The checks that
cost a pass over every object or string run only when the raw text could break them (a field
named more often than objects hold it, an escape, a ``-0``), so a 200,000-tensor header pays a
few regular-expression scans, not a slower parse.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter
from itertools import chain
from typing import Any, Collection

_NEGATIVE_ZERO = re.compile(rb"-0(?![0-9])")
_ESCAPE = re.compile(rb"\\u")
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_LITERAL = re.compile(rb"(?<![\w.])(?:true|false)(?![\w.])")


class Refused(ValueError):
    """What serde_json refuses, in a line."""


def loads(raw: bytes, *, fields: Collection[str]) -> tuple[Any, bool]:
    """``raw`` parsed as serde_json parses it, or ``Refused``; and ``plain``: no float and no
    ``true``/``false`` can be in it, so its integer fields need no per-element type check.

    >>> loads(b'{"w": {"a": 1, "b": [2, -0]}}', fields={"a"})
    ({'w': {'a': 1, 'b': [2, -0.0]}}, False)
    >>> loads(b'{"w": {"a": 1, "a": 2}}', fields={"a"})
    Traceback (most recent call last):
    pytest_ckpt.formats.strict_json.Refused: the field "a" appears twice in one object
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Refused(f"it is not UTF-8 ({e.reason} at byte {e.start})") from None
    floats: list[str] = []

    def parse_float(token: str) -> float:
        floats.append(token)
        value = float(token)
        if math.isinf(value):
            raise Refused(f"the number {token} is out of range")
        return value

    options: dict[str, Any] = {"parse_constant": _constant, "parse_float": parse_float}
    if _NEGATIVE_ZERO.search(raw):
        options["parse_int"] = lambda token: parse_float(token) if token == "-0" else int(token)
    escaped = bool(_ESCAPE.search(raw))
    value = json.loads(text, **options)
    if escaped or not _named_once(raw, value, fields):
        value = json.loads(text, object_pairs_hook=_pairs(fields), **options)
    if escaped and _SURROGATE.search(raw):
        _no_lone_surrogate(value)
    # a substring test is a C scan; the exact regular expression runs only where it may match
    literal = (raw.find(b"true") >= 0 or raw.find(b"false") >= 0) and _LITERAL.search(raw)
    return value, not floats and not literal


def _named_once(raw: bytes, value: Any, fields: Collection[str]) -> bool:
    # without escapes a name is spelt as it reads: no more spellings than objects holding it
    # means no object holds it twice (counted in C: a pass per field)
    if not isinstance(value, dict):
        return True
    # the keys of every object, counted in C in one pass
    held = Counter(chain(value, *[v for v in value.values() if type(v) is dict]))
    for name in fields:
        if raw.count(_needle(name)) != held[name]:
            return False
    return True


@functools.lru_cache(maxsize=None)
def _needle(name: str) -> bytes:
    return b'"%s"' % name.encode()


def _pairs(fields: Collection[str]):
    def pairs(items: list[tuple[str, Any]]) -> dict:
        out = dict(items)
        if len(out) != len(items):
            seen: set[str] = set()
            for key, _ in items:
                if key in seen and key in fields:
                    raise Refused(f'the field "{key}" appears twice in one object')
                seen.add(key)
        return out
    return pairs


def _constant(token: str) -> float:
    raise Refused(f"it holds {token}, which JSON does not allow")


def _no_lone_surrogate(value: Any) -> None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise Refused(f"the string {v!r} holds a lone surrogate escape") from None
