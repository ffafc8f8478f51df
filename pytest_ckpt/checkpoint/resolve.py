"""Turn any source (module, mapping, path) into a :class:`View` with canonical names."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .notes import Note
from ..errors import CheckpointError
from . import canonical, frameworks, locate
from .configs import CONFIG_KEYS, config_to_dict, module_config
from .schema import Schema
from .ties import module_tie_groups, tie_groups
from .view import PartialModel, View, dataless, holds_values


def resolve(
    source: Any,
    *,
    values: bool,
    like: "View | Schema | Iterable[str] | None" = None,
    weights_only: bool = True,
    label: str | None = None,
    at: tuple[str | int, ...] | None = None,
    defer_crcs: bool = False,
) -> View:
    """Resolve ``source`` into a :class:`View`.

    ``values=False`` reads metadata only (meta tensors) where the format
    allows. ``like`` is the other side of the comparison: its names guide
    which mapping in the file is the model and how deep wrapper prefixes are
    stripped. ``at``: read the mapping at that place in a file holding several
    (one of :func:`model_locations`), whatever the others. ``defer_crcs``: a
    file's large records are checksummed as
    :func:`~pytest_ckpt.compare.compare.compare` compares them (``View.crcs``),
    for a caller that compares the view before saying anything of it.
    """
    if isinstance(source, View):
        return source
    target = _target_names(like)
    if isinstance(source, torch.nn.Module):
        return module_view(source, label=label)
    if isinstance(source, (str, os.PathLike)):
        return _file_view(Path(source), values=values, target=target,
                          weights_only=weights_only, label=label, at=at, defer_crcs=defer_crcs)
    if isinstance(source, Mapping):
        return tree_view(source, target=target, label=label or "state dict",
                         ties_expressible=True, at=at)
    raise TypeError(
        f"cannot read a checkpoint from {type(source).__name__}: expected an nn.Module, "
        "a mapping of names to tensors, or a path"
    )


def align(expected: View, actual: View) -> tuple[View, View]:
    """The two sides of a comparison with an attribute prefix undone, when one side is a
    module that holds the other as an attribute (a LightningModule's ``self.model``).

    Files and state dicts are stripped as they are read (:func:`resolve` with ``like=``);
    this covers what that cannot: a live module on either side, and a prefix on the
    expected side. Only a prefix that makes the names match is removed, never a guess.
    """
    enames, anames = expected.schema.specs.keys(), actual.schema.specs.keys()
    if enames == anames:
        return expected, actual  # the usual case
    if "snapshot" in (expected.noun, actual.noun):
        # a snapshot pins the names: a model moved under self.model is a change to review,
        # since old checkpoints no longer load into it with a plain load_state_dict
        return expected, actual
    if canonical.mostly_matching(anames, enames) or canonical.mostly_matching(enames, anames):
        return expected, actual  # most names match as they are: no prefix to undo
    prefix = canonical.attribute_prefix(anames, enames)
    if prefix is not None:
        return expected, _without_prefix(actual, prefix)
    prefix = canonical.attribute_prefix(enames, anames)
    if prefix is not None:
        return _without_prefix(expected, prefix), actual
    return expected, actual


def _without_prefix(view: View, prefix: str) -> View:
    def strip(name: str) -> str:
        return canonical.strip_prefix(name, prefix)

    tensors = {strip(name): t for name, t in view.tensors.items()}
    kept = sorted(name for name in view.tensors if not name.startswith(prefix))
    return dataclasses.replace(
        view,
        schema=Schema.of(tensors, located_at=view.schema.located_at,
                         stripped=view.schema.stripped + (prefix,)),
        tensors=tensors,
        ties=None if view.ties is None else [tuple(sorted(strip(x) for x in g)) for g in view.ties],
        notes=[*view.notes, attribute_prefix_note(prefix, view.label, kept=kept)],
        source_names={strip(name): view.source_names.get(name, name) for name in view.tensors},
        attribute_prefix=(prefix, "removed"),
    )


def _target_names(like) -> AbstractSet[str] | None:
    # a schema's own key view, not a copy: the other side of a comparison can hold 200,000 names
    if like is None:
        return None
    if isinstance(like, View):
        return like.schema.specs.keys()
    if isinstance(like, Schema):
        return like.specs.keys()
    if isinstance(like, Mapping):
        return set(like)
    if isinstance(like, torch.nn.Module):
        return module_view(like).schema.specs.keys()
    return set(like)


def module_view(module: torch.nn.Module, *, label: str | None = None) -> View:
    """A live module by canonical names: wrappers unwrapped by type, not by guessing."""
    inner, stripped = canonical.unwrap(module)
    raw = inner.state_dict()
    rename = {name: canonical.remove_inner_segments(name)[0] for name in raw}
    adapter = canonical.adapter_name(inner)
    if adapter is not None:  # peft's files hold lora_A.weight for the live lora_A.default.weight
        rename = {src: canonical.without_adapter_name(cur, adapter) for src, cur in rename.items()}
    tensors = {rename[name]: t.detach() for name, t in raw.items()}
    ties = [tuple(sorted(rename.get(n, n) for n in group)) for group in module_tie_groups(inner)]
    notes = []
    if adapter is not None:
        notes.append(Note(
            "prefix",
            f"adapter name .{adapter}. removed from the adapter's names in "
            f"{label or f'model ({type(inner).__name__})'}, as peft's save_pretrained writes them",
            info=True,
        ))
    if stripped:
        notes.append(Note(
            "prefix",
            f"model side is wrapped: read through {' '.join(stripped)} "
            f"({canonical.added_by(stripped)})",
            info=True,
        ))
    return View(
        label=label or f"model ({type(inner).__name__})",
        schema=Schema.of(tensors, stripped=stripped),
        tensors=tensors,
        has_values=holds_values(tensors),
        ties=ties,
        config=module_config(inner),
        notes=notes,
        format="module",
        module=inner,
        source_names={c: s for s, c in rename.items()},
    )


#: the formats save_pretrained writes, with a config.json beside them
HF_FORMATS = ("safetensors", "hf-sharded", "hf-sharded-unindexed")


def model_locations(source: Any, *, weights_only: bool = True) -> list[tuple[str | int, ...]]:
    """Where a file (or a mapping) holds something that could be a model, in file order: a training
    state's model beside a frozen VAE, an EMA, a teacher. A module, or a file of one model: one place.

    >>> sd = {"blocks.0.w": torch.zeros(2), "head.w": torch.zeros(2)}
    >>> model_locations({"trainer": {"var": sd, "vae": dict(sd)}, "rng": torch.zeros(4)})
    [('trainer', 'var'), ('trainer', 'vae')]
    """
    if isinstance(source, (str, os.PathLike)):
        from .. import formats

        source = formats.read(Path(source), meta=True, weights_only=weights_only).tree
    elif not isinstance(source, Mapping):
        return [()]
    found = locate.candidates(source)
    models = [c.path for c in found if _could_be_a_model(c)]
    return models or [c.path for c in found[:1]]


def _file_view(path: Path, *, values: bool, target, weights_only: bool, label, at=None,
               defer_crcs: bool = False) -> View:
    from .. import formats

    contents = formats.read(path, meta=not values, weights_only=weights_only, defer_crcs=defer_crcs)
    stored = contents.stored
    stored_ties = stored.get("ties") if stored else None
    if label is None:
        label = str(path) if contents.noun == "checkpoint" else f"{contents.noun} {path.name}"
    view = tree_view(
        contents.tree,
        target=target,
        label=label,
        ties_expressible=contents.ties_expressible,
        stored_ties=stored_ties,
        tie_key=contents.tie_key,
        origin=path,
        # a schema snapshot pins the names: a model moved under self.model is a change to review
        attributes=contents.noun != "snapshot",
        at=at,
    )
    view.format = contents.format
    view.noun = contents.noun
    view.name = path.name
    view.expected_noun = f"{contents.noun} {path.name}"  # no code built it: not "the model"
    if values and not contents.meta and not view.has_values:  # values read, yet some tensors hold none
        view.dataless = dataless(view.tensors)
        view.has_values = True
    view.stored = stored
    view.crcs = contents.crcs
    if stored and stored.get("config") is not None:
        view.config = stored["config"]
    view.saved_by = frameworks.saved_by(contents.tree)
    if view.config is None and view.saved_by is None and contents.format in HF_FORMATS:
        from ..formats import hf_config

        hf = hf_config.beside(path)
        if hf is not None:  # save_pretrained's config.json: the checkpoint's config
            view.config, view.saved_by = config_to_dict(hf), frameworks.transformers_saved(hf)
    if view.config is None and view.saved_by is not None and view.saved_by.config_key:
        # the framework's own record of the config the model was built from (Lightning's
        # hyper_parameters) is the file's config: compared like one pc.save stored
        try:
            view.config = config_to_dict(contents.tree[view.saved_by.config_key])
        except (TypeError, ValueError):
            pass
    return view


def tree_view(
    tree: Any,
    *,
    target: AbstractSet[str] | None,
    label: str,
    ties_expressible: bool,
    stored_ties=None,
    tie_key=None,
    origin: Path | None = None,
    attributes: bool = True,
    at: tuple[str | int, ...] | None = None,
) -> View:
    """Locate the state dict inside ``tree`` and read it by canonical names.

    ``tie_key``: how the file's reader identifies its meta tensors' storages
    (``Contents.tie_key``); real tensors are compared by address. ``at``: the
    mapping at that place, not the one that matches ``target`` best.
    """
    found = locate.candidates(tree)
    if not found:
        raise CheckpointError(
            origin, "not-a-checkpoint",
            f"no mapping of names to tensors found in it ({_describe(tree)})",
        )
    score = None
    if target:
        def score(c: locate.Candidate) -> float:
            # Matching names count, extra and absent names count against: a 6-block EMA
            # beside a 2-block model holds every model name, but is not the model.
            naming = canonical.best_naming(c.tensors, target, attributes=attributes)
            names = naming.names()
            return 2 * len(names & target) - len(names ^ target)
    if at is not None:
        chosen = next((c for c in found if c.path == tuple(at)), None)
        if chosen is None:
            raise CheckpointError(origin, "not-a-checkpoint",
                                  f"no mapping of names to tensors at {locate.format_path(at)}")
    else:
        chosen = locate.choose(found, score)
    naming = canonical.best_naming(chosen.tensors, target, attributes=attributes)
    partial = None
    if target and at is None:
        partial = _partial_model(found, chosen, naming, target, attributes)
        if partial is not None:  # the training state's own model, damaged: read it, and say so
            chosen, naming, partial = partial
    if naming.identity:  # read as they are: no renaming pass (chosen.tensors is our own dict)
        tensors, source_names = chosen.tensors, {}
    else:
        tensors = {cur: chosen.tensors[src] for src, cur in naming.rename.items()}
        source_names = {c: s for s, c in naming.rename.items()}
    notes = _location_notes(chosen, found, naming, label,
                            chosen_by_target=target is not None or at is not None)
    if not target and at is None:  # nothing to compare with: read the most tensors, but say what the model lacks
        shadowed = _partial_model(found, chosen, naming, naming.names(), attributes)
        if shadowed is not None:
            notes.append(_shadowed_note(shadowed[2], label))
    if stored_ties is not None:
        ties = [tuple(sorted(_renamed(n, naming) for n in g)) for g in stored_ties]
    elif ties_expressible:
        ties = [tuple(sorted(naming.rename.get(n, n) for n in g))
                for g in tie_groups(chosen.tensors, key=tie_key)]
    else:
        ties = None
    stripped = naming.stripped + naming.foreign
    return View(
        label=label,
        schema=Schema.of(tensors, located_at=chosen.path, stripped=stripped),
        tensors=tensors,
        has_values=holds_values(tensors),
        ties=ties,
        notes=notes,
        source_names=source_names,
        found_config=_config_beside(tree, chosen.path),
        attribute_prefix=((naming.foreign[0], "removed") if naming.foreign else
                          (naming.added[0], "added") if naming.added else None),
        partial=partial,
    )


def _partial_model(found, chosen: locate.Candidate, naming: canonical.Naming,
                   target: AbstractSet[str], attributes: bool):
    """``(candidate, naming, PartialModel)`` when the mapping the training state names as the
    model (``model``, ``state_dict``, ...) lost to ``chosen`` only because it lacks tensors
    ``chosen`` holds: a copy of the same model (an EMA) standing in for a damaged one. Else None.

    A copy of the same model: ``chosen`` holds every tensor of it with the same shape, and
    some tensor it lacks belongs to a module it has (BatchNorm's running stats beside its
    weight, left out by a save of named_parameters()). A smaller model beside a larger one (a
    student beside its teacher) lacks whole modules: that is another model, not a damaged one.
    """
    named = locate.named_model(found)
    if named is None or named is chosen:
        return None
    own = canonical.best_naming(named.tensors, target, attributes=attributes)
    theirs = {cur: chosen.tensors[src] for src, cur in naming.rename.items()}
    mine = {cur: named.tensors[src] for src, cur in own.rename.items()}
    if not mine.keys() < theirs.keys() or any(
            tuple(t.shape) != tuple(theirs[n].shape) for n, t in mine.items()):
        return None
    lacking = sorted(n for n in theirs.keys() - mine.keys()
                     if n in target and n.rpartition(".")[2] not in canonical.WRAPPER_SIDE_NAMES)
    modules = {n.rpartition(".")[0] for n in mine}
    if not any(n.rpartition(".")[0] in modules for n in lacking):
        return None
    return named, own, PartialModel(read=named.path, rival=chosen.path, lacking=tuple(lacking))


def _config_beside(tree: Any, path: tuple) -> tuple[str, dict] | None:
    """The config a training state keeps next to the weights, nearest level first."""
    node, parents = tree, []
    for part in path:
        if not isinstance(node, Mapping):
            break
        parents.append(node)
        node = node.get(part)
    for depth in range(len(parents) - 1, -1, -1):
        for key in CONFIG_KEYS:
            value = parents[depth].get(key)
            if isinstance(value, Mapping) and value and not _has_tensors(value):
                try:
                    return locate.format_path(path[:depth] + (key,)), config_to_dict(value)
                except (TypeError, ValueError):
                    continue
    return None


def _has_tensors(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, Mapping):
        return any(_has_tensors(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_tensors(v) for v in value)
    return False


def _location_notes(chosen, found, naming: canonical.Naming, label: str, *,
                    chosen_by_target: bool) -> list[Note]:
    notes = []
    others = [c for c in found if c is not chosen]
    # without a target, a mapping that could be another model is a real alternative: say so
    rivals = [] if chosen_by_target else [c for c in others if _could_be_a_model(c)]
    if chosen.path:
        passed = _passed_over([c for c in others if not any(c is r for r in rivals)])
        notes.append(Note(
            "nested",
            f"weights found nested at {locate.format_path(chosen.path)} "
            f"({_tensors(chosen.count)}) in {label}{passed}",
            info=True,
        ))
    if rivals:
        notes.append(_candidates_note(chosen, rivals, label))
    if naming.dropped:
        notes.append(Note(
            "prefix",
            f"{', '.join(naming.dropped)} left out and wrapper prefix {''.join(naming.stripped)} "
            f"removed from every name in {label} ({canonical.side_names_added_by(naming.dropped)} "
            "keeps the model as .module and counts its updates beside it)",
            info=True,
        ))
    elif naming.stripped:
        notes.append(Note(
            "prefix",
            f"wrapper prefix {''.join(naming.stripped)} removed from every name in {label} "
            f"({canonical.added_by(naming.stripped)})",
            info=True,
        ))
    if naming.foreign:
        notes.append(attribute_prefix_note(naming.foreign[0], label, kept=naming.kept))
    if naming.added:
        notes.append(attribute_prefix_note(naming.added[0], label, added=True))
    if naming.inner:
        notes.append(Note(
            "prefix",
            f"wrapper segments {', '.join(naming.inner)} removed from inside names in {label}",
            info=True,
        ))
    return notes


def _could_be_a_model(c: locate.Candidate) -> bool:
    # module paths ("blocks.0.attn.weight"), more than one tensor: not an RNG state or a counter
    return not c.per_parameter_state and c.count > 1 and any("." in name for name in c.tensors)


def _candidates_note(chosen: locate.Candidate, rivals: list[locate.Candidate], label: str) -> Note:
    """Several mappings could be the model and nothing said which: name them and how to choose."""
    ranked = sorted(rivals, key=lambda c: (-c.count, -c.nbytes))
    if all(c.count < chosen.count for c in rivals):
        why = "the most tensors"
    elif all((c.count, c.nbytes) < (chosen.count, chosen.nbytes) for c in rivals):
        why = "as many tensors as another, the most bytes"
    else:
        why = "the first of equal size"
    shown = ", ".join(f"{locate.format_path(c.path)} ({_tensors(c.count)})" for c in ranked[:4])
    more = f" and {len(ranked) - 4} more" if len(ranked) > 4 else ""
    return Note(
        "candidates",
        f"{len(rivals) + 1} models in {label}: read {locate.format_path(chosen.path)} "
        f"({_tensors(chosen.count)}, {why}), not {shown}{more}; to read another, pass like= a "
        "model, checkpoint or schema snapshot shaped like it (pytest-ckpt inspect --like SOURCE)",
        names=tuple(locate.format_path(c.path) for c in [chosen, *ranked]),
        info=True,
    )


def _shadowed_note(partial: PartialModel, label: str) -> Note:
    # without a target the larger copy was read; partial.read is the model it would have been
    model, read = locate.format_path(partial.read), locate.format_path(partial.rival)
    return Note(
        "candidates",
        f"{model} in {label}, which the training state names as the model, lacks "
        f"{_tensors(len(partial.lacking))} that {read} holds ({_listed(list(partial.lacking))}): "
        f"{read} was read; pass like= the model to check {model} itself",
        names=partial.lacking, info=True)


def attribute_prefix_note(prefix: str, label: str, *, kept: Iterable[str] = (),
                          added: bool = False) -> Note:
    """A parent module's attribute name (``model.`` of a Lightning module, transformers'
    ``base_model_prefix``) removed from, or added to, the names of ``label`` to match the
    other side. ``kept``: names that do not carry it and stay as they are (a head)."""
    attr = prefix.rstrip(".")
    if added:
        return Note(
            "prefix",
            f"attribute prefix {prefix} added to every name in {label}: it holds the module "
            f"that the other side keeps as .{attr} (e.g. a base model's checkpoint read into a "
            f"model with a head, transformers' base_model_prefix {attr!r})",
            info=True,
        )
    kept = list(kept)
    where = "every name" if not kept else f"every name but {_listed(kept)}"
    return Note(
        "prefix",
        f"attribute prefix {prefix} removed from {where} in {label}: the other side is the "
        f"module it holds as .{attr} (e.g. a LightningModule's self.{attr}, or transformers' "
        f"base_model_prefix {attr!r})",
        info=True,
    )


def _listed(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _renamed(name: str, naming: canonical.Naming) -> str:
    """A canonical name (as pc.save stored it) read the way ``naming`` reads the file's names."""
    if naming.foreign:
        return canonical.strip_prefix(name, naming.foreign[0])
    if naming.added:
        return naming.added[0] + name
    return name


def _passed_over(others: list[locate.Candidate]) -> str:
    # Optimizer per-parameter states are many and never the model: one summary for them.
    shown = [c for c in others if not c.per_parameter_state]
    optim = [c for c in others if c.per_parameter_state]
    parts = [f"{locate.format_path(c.path)} ({_tensors(c.count)})" for c in shown[:4]]
    if len(shown) > 4:
        parts.append(f"{len(shown) - 4} more mappings")
    if optim:
        parent = locate.format_path(_common_parent([c.path for c in optim]))
        parts.append(f"{len(optim)} optimizer per-parameter states under {parent}")
    return "; passed over: " + ", ".join(parts) if parts else ""


def _tensors(n: int) -> str:
    return "1 tensor" if n == 1 else f"{n} tensors"


def _common_parent(paths: list[tuple]) -> tuple:
    first = paths[0]
    n = 0
    while n < len(first) and all(len(p) > n and p[n] == first[n] for p in paths):
        n += 1
    return first[:n]


def _describe(tree: Any) -> str:
    if isinstance(tree, Mapping):
        keys = list(tree)[:8]
        return f"a {type(tree).__name__} with keys {keys!r}" + (" ..." if len(tree) > 8 else "")
    return f"a {type(tree).__name__}"
