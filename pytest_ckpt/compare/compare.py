"""Compare two views: a pure function from (expected, actual) to a :class:`~.diff.Diff`."""

from __future__ import annotations

from collections import defaultdict
from itertools import compress
from operator import ne, not_
from typing import Any, Iterable

from ..checkpoint.configs import config_fields_diff, config_to_dict, shared_fields
from ..checkpoint.patterns import matching
from ..checkpoint.schema import TensorSpec
from ..checkpoint.view import View
from .diagnose import Context, diagnose
from ..checkpoint.notes import Note
from .diff import Diff
from .rules.context import plural, runs
from .values import Batch, batch_max_abs_diffs, max_abs_diff

__all__ = ["compare", "broken_ties", "expected_missing"]


def compare(expected: View, actual: View, *, values: bool = True, atol: float = 0.0,
            rtol: float = 0.0, configs: tuple[Any, Any] | None = None,
            config_strict: bool = False, expect_missing: Iterable[str] = ()) -> Diff:
    """Every difference between ``expected`` (what the code builds) and ``actual`` (on disk).

    Values are compared only when both sides have them and ``values`` is
    true, and only for names of equal shape and dtype. Ties are compared only
    when ``actual.ties`` is not ``None``. ``configs=(expected_cfg, actual_cfg)``
    overrides the views' own configs; config differences count only when
    ``config_strict``. ``expect_missing``: patterns (see :func:`expected_missing`) of
    names the model may have and the checkpoint lack, by design: those are no
    difference, and an info note lists them. The notes explain the differences, one per
    cause. A side read with its CRCs left to the comparison (``View.crcs``) has them checked
    here, in the pass over its values: ``CheckpointError`` when its bytes changed.

    >>> import torch
    >>> e = View.of_tensors("model", {"w": torch.zeros(2)})
    >>> a = View.of_tensors("checkpoint", {"w": torch.ones(2)})
    >>> compare(e, a).values
    {'w': 1.0}
    """
    # This runs over every name (200,000 for a large MoE): set operations and map/compress,
    # which loop at C speed, instead of Python loops per name.
    es, as_ = expected.schema.specs, actual.schema.specs
    diff = Diff(expected=expected.label, actual=actual.label,
                          config_strict=config_strict, atol=atol, rtol=rtol)
    # one membership pass per side, no set of 200,000 names built: which expected names the
    # actual side holds gives the common and the missing ones, and the expected specs in order
    held = list(map(as_.__contains__, es.keys()))
    missing = sorted(compress(es.keys(), map(not_, held)))
    stored_once = _stored_through_tie(missing, expected.ties, as_)
    diff.missing = [n for n in missing if n not in stored_once]
    if expect_missing and diff.missing:
        diff.missing, diff.expected_missing = expected_missing(diff.missing, expect_missing)
    left_fresh = diff.expected_missing
    # in the expected side's order, not a set's: tensors made one after another sit close
    # in memory, and visiting them in hash order costs a cache miss each (2-3x slower)
    common = list(compress(es.keys(), held))
    diff.unexpected = ([] if len(common) == len(as_) else
                       sorted(compress(as_.keys(), map(not_, map(es.__contains__, as_.keys())))))
    especs = list(compress(es.values(), held))
    for name in sorted(compress(common, map(ne, especs, map(as_.__getitem__, common)))):
        e, a = es[name], as_[name]
        if e.shape != a.shape:
            diff.shape[name] = (e.shape, a.shape)
        if e.dtype != a.dtype:
            diff.dtype[name] = (e.dtype, a.dtype)
    diff.values_compared = bool(values and expected.has_values and actual.has_values)
    diff.dataless = sorted({*expected.dataless, *actual.dataless})
    try:
        if diff.values_compared:
            if diff.shape or diff.dtype:
                alike = [not (n in diff.shape or n in diff.dtype) for n in common]
                common, especs = list(compress(common, alike)), list(compress(especs, alike))
            found = batch_max_abs_diffs(_batches(common, especs, expected.tensors, actual.tensors),
                                        atol=atol, rtol=rtol, claims=_claims(expected, actual))
            diff.values = {n: found[n] for n in sorted(found)}
    finally:  # a file whose bytes changed is refused before any verdict, and before any other error
        for side in (expected, actual):
            if side.crcs is not None:
                side.crcs.finish()
    copy_notes: list[Note] = []
    if expected.ties is not None and actual.ties is not None:
        diff.ties = broken_ties(expected.ties, actual.ties, as_)
        if diff.ties and actual.module is None:
            diff.ties, diff.tie_copies, copy_notes = _stored_as_copies(
                diff.ties, expected, actual, atol=atol, rtol=rtol)
    # a side configs= leaves as None falls back to that view's own config
    exp_cfg, act_cfg = configs if configs is not None else (None, None)
    exp_cfg = expected.config if exp_cfg is None else config_to_dict(exp_cfg)
    act_cfg = actual.config if act_cfg is None else config_to_dict(act_cfg)
    if exp_cfg is not None and act_cfg is not None:
        if actual.saved_by is not None:  # a framework's record (hyper_parameters, config.json)
            exp_cfg, act_cfg = shared_fields(exp_cfg, act_cfg)
        diff.config = config_fields_diff(exp_cfg, act_cfg)
    diff.expected_info = {**expected.info(), "config": exp_cfg}
    diff.actual_info = {**actual.info(), "config": act_cfg}
    at_fault = "expected" if expected.made_by else "actual" if actual.made_by else None
    # two files (pytest-ckpt diff a.pt b.pt): "the checkpoint" alone would not say which
    noun = actual.noun if expected.name is None or actual.name is None else f"{actual.noun} {actual.name}"
    ctx = Context(expected_config=exp_cfg, actual_config=act_cfg, atol=atol, rtol=rtol,
                  noun=noun, model=expected.expected_noun, built=expected.built,
                  fix_side=expected.made_by or actual.made_by, at_fault=at_fault)
    notes = [*expected.notes, *actual.notes, *diagnose(diff, expected, actual, ctx)]
    if stored_once:
        notes.append(_tie_note(stored_once, actual.label))
    notes += copy_notes
    if left_fresh:
        notes.append(Note(
            "missing", f"{plural(len(left_fresh), 'tensor')} not in {actual.label}, left as the "
                       f"model built them, as expect_missing= allows: "
                       f"{runs(left_fresh, ctx.expected_blocks or None)}",
            names=tuple(left_fresh), info=True))
    # both sides may say the same thing (pytest-ckpt diff a.pt a.pt): once is enough
    diff.notes = list(dict.fromkeys(notes))
    return diff


def _claims(expected: View, actual: View) -> tuple:
    return tuple(None if side.crcs is None else side.crcs.claim for side in (expected, actual))


def expected_missing(names: list[str], patterns: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(still missing, expected missing)``: ``names`` split by the patterns.

    Patterns as in :mod:`~pytest_ckpt.checkpoint.patterns`: a glob, which also covers
    everything under a module it names (``"text_projection"`` covers ``text_projection.weight``).

    >>> expected_missing(["proj.weight", "layers.0.lora_A.weight", "head.bias"], ["proj", "*.lora_*"])
    (['head.bias'], ['proj.weight', 'layers.0.lora_A.weight'])
    """
    expected = matching(names, patterns)
    if not expected:
        return names, []
    chosen = set(expected)
    return [n for n in names if n not in chosen], expected


def _batches(names: list[str], specs: list[TensorSpec], et, at) -> list[Batch]:
    """The names of equal schema entries in one :class:`Batch` each, with their tensors.

    ``Schema.of`` makes equal specs one object, so batches are found by identity
    with map/compress passes; a schema with many kinds of tensors falls back to
    one dict append per name.
    """
    kinds = dict(zip(map(id, specs), specs))
    if len(kinds) == 1:
        groups = [names]
    elif len(kinds) <= 16:
        groups = [list(compress(names, [s is kind for s in specs])) for kind in kinds.values()]
    else:
        by_spec: dict[TensorSpec, list[str]] = defaultdict(list)
        for name, spec in zip(names, specs):
            by_spec[spec].append(name)
        groups = list(by_spec.values())
    return [Batch(g, list(map(et.__getitem__, g)), list(map(at.__getitem__, g))) for g in groups]


def _stored_through_tie(missing, ties, actual_names) -> dict[str, str]:
    """Missing names whose tie partner is stored: writers such as ``save_pretrained`` keep one copy.

    Loading the stored partner fills the shared tensor, so nothing is lost.
    """
    out = {}
    absent = set(missing)
    for group in ties or ():
        present = [n for n in group if n in actual_names]
        if present:
            out.update({n: present[0] for n in group if n in absent})
    return {n: out[n] for n in missing if n in out}


def _tie_note(stored_once: dict[str, str], label: str) -> Note:
    pairs = ", ".join(f"{n} (tied to {p})" for n, p in list(stored_once.items())[:3])
    more = f" and {len(stored_once) - 3} more" if len(stored_once) > 3 else ""
    return Note("tied", f"{pairs}{more} not stored separately in {label}: "
                "the stored tie partner fills the shared tensor on load",
                names=tuple(stored_once), info=True)


def _stored_as_copies(groups, expected: View, actual: View, *, atol: float, rtol: float):
    """Broken tie groups of a file or state dict, split by whether its copies agree.

    A load into the model re-ties them (the model holds one tensor under every name of
    the group), so copies with equal values lose nothing: an info note. Copies that
    differ are still broken, with the copy a load keeps; a live module on the actual side
    never gets here (its tie is really gone). Returns ``(broken, tie_copies, notes)``.
    """
    broken, copies, same, unread = [], {}, [], []
    for group in groups:
        present = [n for n in group if n in actual.tensors]
        tensors = [actual.tensors[n] for n in present]
        if len({(tuple(t.shape), t.dtype) for t in tensors}) > 1:
            broken.append(group)  # copies of other shapes or dtypes: no load re-ties those
        elif not actual.has_values:
            unread.append(group)
        else:
            found = [max_abs_diff(tensors[0], t, atol=atol, rtol=rtol) for t in tensors[1:]]
            worst = max((d for d in found if d is not None), default=None)
            if worst is None:
                same.append(group)
            else:
                broken.append(group)
                copies[group] = (worst, _loaded_last(present, expected))
    notes = []
    for groups_, how in ((same, "identical copies: loading re-ties them, nothing is lost"),
                         (unread, "separate copies (values not read: not checked that they agree)")):
        if groups_:
            shown = "; ".join(" = ".join(g) for g in groups_[:2])
            more = f" and {len(groups_) - 2} more groups" if len(groups_) > 2 else ""
            notes.append(Note("tied", f"{shown}{more}: one tensor in the model, stored in "
                                      f"{actual.label} as {how}",
                              names=tuple(n for g in groups_ for n in g), info=True))
    return broken, copies, notes


def _loaded_last(names: list[str], expected: View) -> str:
    # load_state_dict copies module by module in state-dict order: the last copy is what stays
    wanted = set(names)
    order = [n for n in expected.schema if n in wanted]
    return order[-1] if order else names[-1]


def broken_ties(expected: list[tuple[str, ...]], actual: list[tuple[str, ...]],
                actual_names) -> list[tuple[str, ...]]:
    """The groups of ``expected`` whose names (those ``actual`` has) are not one group there."""
    group_of = {name: i for i, group in enumerate(actual) for name in group}
    broken = []
    for group in expected:
        present = [n for n in group if n in actual_names]
        if len(present) < 2:
            continue  # the absent names are reported as missing already
        if len({group_of.get(n, ("alone", n)) for n in present}) > 1:
            broken.append(tuple(group))
    return broken
