"""Is a diff right about a drawn case? Each check returns ``None``, or what is wrong in a line.

Shared by the property tests and ``benchmarks/detection.py`` so the table
measures exactly what the tests assert.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import strategies as st

import pytest_ckpt as pc
from pytest_ckpt.checkpoint.configs import config_to_dict, layer_field
from pytest_ckpt.compare.ranges import split_block
from tests.strategies.families import Family, with_fields

#: the notes a config mismatch may raise: blocks, shapes, and the config itself
MISMATCH_CAUSES = ("layer-count", "shape", "config")


def drift(m, d, *, stored_config: bool = False) -> str | None:
    """``m.check(d)``; and a cut tail must read ``incomplete`` when the file stores its config."""
    problem = m.check(d)
    if problem or m.kind != "truncate-tail" or not stored_config:
        return problem
    if any(split_block(n) for n in m.names) and not any(n.kind == "incomplete" for n in d.notes):
        return f"{m!r}: blocks cut, the file stores its config, yet no 'incomplete' note:\n{d}"
    return None


def mismatch(pair, d) -> str | None:
    """A mismatched config pair: not ok, and every difference explained by a changed field."""
    if d.ok:
        return f"false pass: {pair!r} gives an ok diff"
    problems = [n for n in d.notes if not n.info]
    for note in problems:
        if note.kind not in MISMATCH_CAUSES:
            return f"wrong cause for {pair!r}: [{note.kind}] {note.text}"
    a, b = pair
    field = layer_field(config_to_dict(a))
    if field in pair.changed:
        # the report reads checkpoint -> model; the model is built from a, the checkpoint from b
        want = f"{field}: {pair.changed[field][1]} -> {pair.changed[field][0]}"
        if not any(n.kind == "layer-count" and want in n.text for n in problems):
            return f"{pair!r}: no layer-count note says {want!r}:\n{d}"
    blocks = {x for n in problems if n.kind == "layer-count" for x in n.names}
    for name in [*d.missing, *d.unexpected]:
        if name not in blocks:
            return f"{pair!r}: {name} is absent on one side but not in a layer-count note:\n{d}"
    shapes = [n for n in problems if n.kind == "shape"]
    for name in d.shape:
        texts = [n.text for n in shapes if name in n.names]
        if not any(f"because {f}:" in t for t in texts for f in pair.changed):
            return f"{pair!r}: the shape of {name} is not put down to a changed field:\n{d}"
    return None


def equivalent(fam: Family, cfg: Any):
    """Configs like ``cfg`` with fields changed that never change a tensor (dropout, kernels)."""
    changes = st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in fam.equivalent.items()})
    return changes.map(lambda c: with_fields(cfg, **c))


def equivalence(fam: Family, a: Any, b: Any, seed: int, folder: Path) -> str | None:
    """Models of schema-equivalent configs, built from one seed, show no difference anywhere."""
    checks = {
        "live models": lambda: pc.diff(fam.build(a, seed), fam.build(b, seed), configs=(a, b)),
        "meta models": lambda: pc.diff(fam.meta(a), fam.meta(b), configs=(a, b)),
        "a file saved with its config": lambda: pc.diff(
            fam.build(a, seed), pc.save(fam.build(b, seed), folder / "b.safetensors", config=b)),
    }
    for what, run in checks.items():
        d = run()
        if not d.ok:
            return f"false alarm ({what}) for configs differing in only {_changes(a, b)}:\n{d}"
    return None


def _changes(a: Any, b: Any) -> str:
    from pytest_ckpt.checkpoint.configs import config_fields_diff

    return ", ".join(config_fields_diff(config_to_dict(a), config_to_dict(b))) or "nothing"
