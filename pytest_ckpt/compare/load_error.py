"""A load's own error as evidence: what ``load_state_dict`` (torch) or ``from_pretrained``
(transformers) said was missing, unexpected or of another size, and the model that load built.

Pure text in, data out: :func:`parse` reads the message; :func:`built_view` rebuilds the
schema of the model the load built (the file's names, less the unexpected, plus the
missing, with the model's shapes where sizes mismatched), so the ordinary diff rules can
explain the failure against the file; :func:`shorten` is the message for a person, with its
long key lists and repeated per-parameter lines collapsed.

>>> e = parse('Error(s) in loading state_dict for Net:\\n\\tUnexpected key(s) in state_dict: '
...           '"blocks.3.weight", "blocks.3.bias". ')
>>> e.model, e.unexpected
('Net', ['blocks.3.weight', 'blocks.3.bias'])
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ..checkpoint.canonical import WRAPPER_PREFIXES, remove_inner_segments
from ..checkpoint.schema import Schema
from ..checkpoint.view import View
from .ranges import collapse

__all__ = ["LoadError", "parse", "canonical_name", "built_view", "shorten"]

_HEADER = re.compile(r"Error\(s\) in loading state_dict for (\w+)")
_KEYS = re.compile(r"(Missing|Unexpected) key\(s\) in state_dict: (.*)")
_QUOTED = re.compile(r'"([^"]*)"')
_SIZE = re.compile(r"size mismatch for ([^:\s]+): copying a param with shape torch\.Size\(\[([\d,\s]*)\]\) "
                   r"from checkpoint, the shape in current model is torch\.Size\(\[([\d,\s]*)\]\)")
#: a row of transformers' loading report: ``key | STATUS | details``
_ROW = re.compile(r"^\s*([^|\s][^|]*?)\s*\|\s*(MISSING|UNEXPECTED|MISMATCH)\s*\|(.*)$")
_ROW_SIZES = re.compile(r"ckpt:\s*torch\.Size\(\[([\d,\s]*)\]\)\s*vs\s*model:\s*torch\.Size\(\[([\d,\s]*)\]\)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BRACES = re.compile(r"\{([^{}]*)\}")

_BATCHES = ".num_batches_tracked"

#: key lists longer than this are cut in :func:`shorten`; size-mismatch lines likewise
SHOW_KEYS = 3
SHOW_LINES = 3
#: runs of names shown after a cut key list
SHOW_RUNS = 4


@dataclass
class LoadError:
    """What a load said about the state dict it was given (names as that load saw them)."""

    #: the class it loaded into (``for Net``), when said
    model: str | None = None
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    #: name -> (shape in the checkpoint, shape in the model)
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    @property
    def sizes_only(self) -> bool:
        """Only shapes differ: a load that refused for sizes (``strict=False`` still raises on them)."""
        return bool(self.shapes) and not (self.missing or self.unexpected)


def parse(text: str, log: str = "") -> LoadError | None:
    """The keys a load error names: torch's ``Error(s) in loading state_dict`` message, or the
    rows of transformers' loading report in ``log`` (what it logged before raising).
    ``None`` when neither says anything about keys.

    >>> parse("size mismatch for w: copying a param with shape torch.Size([4, 2]) from "
    ...       "checkpoint, the shape in current model is torch.Size([3, 2]).").shapes
    {'w': ((4, 2), (3, 2))}
    >>> parse("CUDA out of memory") is None
    True
    """
    error = LoadError()
    header = _HEADER.search(text)
    if header:
        error.model = header.group(1)
    for line in text.splitlines():
        keys = _KEYS.search(line)
        if keys:
            names = _QUOTED.findall(keys.group(2))
            (error.missing if keys.group(1) == "Missing" else error.unexpected).extend(names)
            continue
        size = _SIZE.search(line)
        if size:
            error.shapes[size.group(1)] = (_shape(size.group(2)), _shape(size.group(3)))
    if not error and log:
        for line in _ANSI.sub("", log).splitlines():
            row = _ROW.match(line)
            if not row:
                continue
            names = _expand(row.group(1))
            if row.group(2) == "MISSING":
                error.missing.extend(names)
            elif row.group(2) == "UNEXPECTED":
                error.unexpected.extend(names)
            else:
                sizes = _ROW_SIZES.search(row.group(3))
                if sizes:
                    for name in names:
                        error.shapes[name] = (_shape(sizes.group(1)), _shape(sizes.group(2)))
    return error if error else None


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.replace(" ", "").split(",") if d)


def _expand(key: str) -> list[str]:
    """transformers' merged keys: ``h.{0, 1}.w`` -> ``h.0.w``, ``h.1.w``; ``{0...47}`` a range."""
    m = _BRACES.search(key)
    if not m:
        return [key]
    inner = m.group(1)
    if "..." in inner:
        lo, _, hi = inner.partition("...")
        values = [str(i) for i in range(int(lo), int(hi) + 1)] if lo.strip().isdigit() and hi.strip().isdigit() else [inner]
    else:
        values = [v.strip() for v in inner.split(",")]
    return [n for v in values for n in _expand(key[:m.start()] + v + key[m.end():])]


def canonical_name(name: str, known) -> str:
    """``name`` as the file's canonical names spell it: leading wrapper prefixes and inner
    wrapper segments removed, but only when that makes it one of ``known``.

    >>> canonical_name("module._orig_mod.fc.weight", {"fc.weight"})
    'fc.weight'
    >>> canonical_name("module.fc.weight", {"module.fc.weight"})
    'module.fc.weight'
    """
    if name in known:
        return name
    current = name
    while True:
        inner, _ = remove_inner_segments(current)
        if inner in known:
            return inner
        prefix = next((p for p in WRAPPER_PREFIXES if current.startswith(p) and current != p), None)
        if prefix is None:
            return name
        current = current[len(prefix):]
        if current in known:
            return current


def built_view(error: LoadError, file: View, *, label: str, noun: str, built: str | None = None,
               made_by: str | None = "load") -> View:
    """The schema of the model the load built, as :func:`parse` tells it: ``file``'s names (its
    canonical reading) less the unexpected, plus the missing; where sizes mismatched, the
    model's shape. Missing names' shapes are unknown (the file lacks them, so no rule compares
    them). Meta tensors only: nothing is read or allocated.
    """
    known = file.schema.specs
    specs = dict(known)
    missing = {canonical_name(n, known) for n in error.missing}
    for name in error.unexpected:
        name = canonical_name(name, known)
        if name.endswith(_BATCHES) and name[:-len(_BATCHES)] + ".running_mean" in missing:
            continue  # BatchNorm fills a missing num_batches_tracked: torch never names it missing
        specs.pop(name, None)
    for name, (_, model_shape) in error.shapes.items():
        name = canonical_name(name, known)
        dtype = known[name].dtype if name in known else torch.float32
        specs[name] = _Spec(model_shape, dtype)
    for name in missing:
        # torch checks no shape of a missing name: the file's is the best guess where it has one
        specs.setdefault(name, known.get(name) or _Spec((), torch.float32))
    tensors = {n: torch.empty(s.shape, dtype=s.dtype, device="meta") for n, s in specs.items()}
    return View(label=label, schema=Schema.of(tensors), tensors=tensors, has_values=False,
                ties=None, expected_noun=noun, built=built, made_by=made_by)


@dataclass(frozen=True)
class _Spec:
    shape: tuple[int, ...]
    dtype: torch.dtype


def _runs(names: list[str]) -> str:
    runs = [r.display for r in collapse(names)]
    more = f" and {len(runs) - SHOW_RUNS} more" if len(runs) > SHOW_RUNS else ""
    return ", ".join(runs[:SHOW_RUNS]) + more


def shorten(text: str, show_keys: int = SHOW_KEYS, show_lines: int = SHOW_LINES) -> str:
    """A load error for a person: every line kept but long key lists cut (with their count and
    block runs) and runs of ``size mismatch for ...`` lines cut after ``show_lines``; tabs
    become two spaces.

    >>> print(shorten('Error(s) in loading state_dict for Net:\\n\\tUnexpected key(s) in state_dict: '
    ...               + ", ".join(f'"h.{i}.w"' for i in range(8)) + ". ", show_keys=2))
    Error(s) in loading state_dict for Net:
      Unexpected key(s) in state_dict: "h.0.w", "h.1.w", ... (8 keys: h.0-7.w)
    """
    out: list[str] = []
    sizes: list[str] = []

    def flush() -> None:
        out.extend(sizes[:show_lines])
        if len(sizes) > show_lines:
            rest = [m.group(1) for m in map(_SIZE.search, sizes[show_lines:]) if m]
            indent = sizes[0][:len(sizes[0]) - len(sizes[0].lstrip())]
            out.append(f"{indent}... and {len(sizes) - show_lines} more size mismatches "
                       f"({_runs(rest)})")
        sizes.clear()

    for line in text.expandtabs(2).splitlines():
        if _SIZE.search(line):
            sizes.append(line.rstrip())
            continue
        flush()
        keys = _KEYS.search(line)
        if keys:
            names = _QUOTED.findall(keys.group(2))
            if len(names) > show_keys:
                head = ", ".join(f'"{n}"' for n in names[:show_keys])
                line = (f"{line[:keys.start(2)]}{head}, ... ({len(names)} keys: {_runs(names)})")
        out.append(line.rstrip())
    flush()
    return "\n".join(out)

