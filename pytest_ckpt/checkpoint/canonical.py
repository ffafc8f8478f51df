"""Canonical names: the names a model has when no wrapper is around it.

DataParallel/DDP add ``module.``, torch.compile ``_orig_mod.``, FSDP1
``_fsdp_wrapped_module.``, activation checkpointing
``_checkpoint_wrapped_module.``, in any order and nesting. On a live module the
wrappers are unwrapped by type (as ``torch.distributed.checkpoint`` does); on a
file only names are known, so a leading prefix is stripped only when every key
carries it, and where a target schema is known, only as deep as matches it best
(a model whose own child is called ``module`` keeps its name).
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Mapping

import torch



@dataclass(frozen=True)
class Wrapper:
    """A wrapper module and the prefix it adds to every name of the module it wraps."""

    prefix: str
    #: what adds it, for reports
    added_by: str
    #: a name only torch's wrappers use: safe to remove wherever it appears inside a name
    reserved: bool


#: every wrapper this package undoes: the one table of wrapper prefixes
WRAPPERS = (
    Wrapper("module.", "DataParallel/DDP", reserved=False),
    Wrapper("_orig_mod.", "torch.compile", reserved=True),
    Wrapper("_fsdp_wrapped_module.", "FSDP1", reserved=True),
    Wrapper("_checkpoint_wrapped_module.", "activation checkpointing", reserved=True),
)
#: names a wrapper keeps beside the wrapped module's names, with the wrapper that adds them:
#: left out when the other side is the bare model (an EMA kept as an AveragedModel)
WRAPPER_SIDE_NAMES = {"n_averaged": ("module.", "torch.optim.swa_utils.AveragedModel")}
WRAPPER_PREFIXES = tuple(w.prefix for w in WRAPPERS)
RESERVED_SEGMENTS = tuple(w.prefix for w in WRAPPERS if w.reserved)
_ADDED_BY = {w.prefix: w.added_by for w in WRAPPERS}


def added_by(prefixes: Iterable[str]) -> str:
    """What added these prefixes, outermost first: ``"torch.compile, then DataParallel/DDP"``.

    >>> added_by(["_orig_mod.", "module."])
    'torch.compile, then DataParallel/DDP'
    """
    return ", then ".join(_ADDED_BY.get(p, "a parent module") for p in prefixes)


@dataclass(frozen=True)
class Naming:
    """One way to read a set of names: ``rename`` maps each source name to its canonical name."""

    stripped: tuple[str, ...]
    rename: Mapping[str, str]
    #: reserved wrapper segments removed from inside names (not leading)
    inner: tuple[str, ...] = ()
    #: a non-wrapper common prefix removed because the target schema has no such prefix
    foreign: tuple[str, ...] = field(default=())
    #: a common prefix the target's names carry, added to every name (a base model's checkpoint
    #: read into the model that holds it as an attribute)
    added: tuple[str, ...] = field(default=())
    #: names that do not carry the ``foreign`` prefix, read as they are (the head beside a base model)
    kept: tuple[str, ...] = field(default=())
    #: source names left out: a wrapper's own bookkeeping (:data:`WRAPPER_SIDE_NAMES`)
    dropped: tuple[str, ...] = field(default=())

    def names(self) -> set[str]:
        return set(self._names)

    @property
    def identity(self) -> bool:
        """Every name is read as it is: nothing stripped or removed."""
        return not (self.stripped or self.inner or self.foreign or self.added or self.dropped)

    @cached_property
    def _names(self) -> frozenset[str]:
        return frozenset(self.rename.values())


def remove_inner_segments(name: str) -> tuple[str, tuple[str, ...]]:
    """Drop reserved wrapper segments from inside ``name`` (never a leading one)."""
    removed = []
    for segment in RESERVED_SEGMENTS:
        needle = "." + segment
        while needle in name:
            name = name.replace(needle, ".", 1)
            removed.append(segment)
    return name, tuple(removed)


def _inner_pass(names: Mapping[str, str]) -> tuple[Mapping[str, str], tuple[str, ...]]:
    """``names`` (source -> current name) with reserved segments removed inside the current names."""
    joined = "\n".join(names.values())
    if not any("." + segment in joined for segment in RESERVED_SEGMENTS):
        return names, ()  # the usual case: one scan of the joined names, no per-name work
    rename, removed = {}, set()
    for src, cur in names.items():
        new, gone = remove_inner_segments(cur)
        rename[src] = new
        removed.update(gone)
    return rename, tuple(sorted(removed))


def namings(names: Iterable[str]) -> list[Naming]:
    """Every reading of ``names``, from no stripping to all universal wrapper prefixes stripped.

    >>> [n.stripped for n in namings(["_orig_mod.module.w", "_orig_mod.module.b"])]
    [(), ('_orig_mod.',), ('_orig_mod.', 'module.')]
    """
    names = list(names)
    out = []
    current = dict(zip(names, names))
    stripped: tuple[str, ...] = ()
    while True:
        out.append(Naming(stripped, *_inner_pass(current)))
        prefix = _universal_prefix(current.values())
        if prefix is None:
            return out
        current = {src: cur[len(prefix):] for src, cur in current.items()}
        stripped += (prefix,)


def _universal_prefix(names: Iterable[str]) -> str | None:
    # The names that start with a prefix are one run in sorted order, so every name
    # starts with it exactly when the smallest and the largest do: two passes at C speed.
    names = list(names)
    if not names:
        return None
    lo, hi = min(names), max(names)
    for prefix in WRAPPER_PREFIXES:
        # Stripping must leave a name: "module." alone (the smallest of the run) is not a wrapper.
        if lo.startswith(prefix) and hi.startswith(prefix) and lo != prefix:
            return prefix
    return None


def best_naming(
    names: Iterable[str],
    target: Iterable[str] | None = None,
    *,
    attributes: bool = True,
) -> Naming:
    """The reading of ``names`` that matches ``target`` best; without a target, the most stripped.

    Among equal matches the most stripped reading wins. When every name carries one
    common first component that the target lacks (``model.`` from a Lightning module),
    that component is removed too, if that makes the names match; when the target's
    names carry one that the names lack (a base model's checkpoint read into the model
    holding it), it is added. ``attributes=False``: wrapper prefixes only (a schema snapshot
    pins its names).
    """
    if target is None:
        return namings(names)[-1]
    if not isinstance(target, AbstractSet):  # sets and key views are used as they are
        target = set(target)
    if not isinstance(names, (Mapping, AbstractSet)):
        names = list(names)
    side = _wrapper_side_names(names, target)
    if side:
        rest = best_naming([n for n in names if n not in side], target, attributes=attributes)
        return dataclasses.replace(rest, dropped=side)
    options = namings(names)
    if len(options) == 1:  # nothing to strip (the usual case): no name sets to build
        best = options[0]
    else:
        best = max(options, key=lambda n: (len(n._names & target), len(n.stripped)))
    return (_foreign_prefix(best, target) if attributes else None) or best


def _wrapper_side_names(names, target: AbstractSet[str]) -> tuple[str, ...]:
    """The wrapper side names (``n_averaged``) that ``target`` lacks, when every other name
    carries that wrapper's prefix: an ``AveragedModel``'s state dict read for the bare model."""
    side = tuple(n for n, (prefix, _) in WRAPPER_SIDE_NAMES.items() if n in names and n not in target)
    if not side:
        return ()
    prefixes = {WRAPPER_SIDE_NAMES[n][0] for n in side}
    rest = [n for n in names if n not in side]
    return side if len(prefixes) == 1 and rest and _universal_prefix(rest) in prefixes else ()


def side_names_added_by(dropped: Iterable[str]) -> str:
    """What keeps these side names: ``"torch.optim.swa_utils.AveragedModel"``."""
    return ", ".join(dict.fromkeys(WRAPPER_SIDE_NAMES[n][1] for n in dropped))


def _foreign_prefix(naming: Naming, target: AbstractSet[str]) -> Naming | None:
    """``naming`` with an attribute prefix removed (:func:`attribute_prefix`) or added
    (:func:`attribute_prefix_added`) to match ``target``; else ``None``."""
    if not naming.rename or mostly_matching(naming._names, target):
        return None  # most names match as they are (the usual case): no prefix to undo
    prefix = attribute_prefix(naming._names, target)
    if prefix is not None:
        rename = {src: strip_prefix(cur, prefix) for src, cur in naming.rename.items()}
        kept = tuple(sorted(cur for cur in naming.rename.values() if not cur.startswith(prefix)))
        return Naming(naming.stripped, rename, naming.inner, foreign=(prefix,), kept=kept)
    prefix = attribute_prefix_added(naming._names, target)
    if prefix is not None:
        rename = {src: prefix + cur for src, cur in naming.rename.items()}
        return Naming(naming.stripped, rename, naming.inner, added=(prefix,))
    return None


def mostly_matching(names: AbstractSet[str], target: AbstractSet[str], sample: int = 64) -> bool:
    """Do at least half of ``names`` match ``target`` as they are? Judged on an evenly spread
    sample: this guards every read, and 200,000 names would cost a set intersection each time.

    >>> mostly_matching({"a.w", "b.w", "c.w"}, {"a.w", "b.w"}), mostly_matching({"m.a.w"}, {"a.w"})
    (True, False)
    """
    step = max(1, len(names) // sample)
    picked = list(itertools.islice(names, 0, None, step))
    return 2 * sum(1 for name in picked if name in target) >= len(picked)


def strip_prefix(name: str, prefix: str) -> str:
    """``name`` without ``prefix`` when it starts with it (the head beside a base model keeps its name)."""
    return name[len(prefix):] if name.startswith(prefix) else name


def attribute_prefix(names: AbstractSet[str], target: AbstractSet[str]) -> str | None:
    """The first component that ``names`` carry (``model.`` of a LightningModule holding the
    model as ``self.model``; transformers' ``base_model_prefix`` of a ``...ForCausalLM``
    checkpoint read into its base model), when removing it once makes more names match
    ``target``; else ``None``. Every name carries it, or all but a few that stay as they are
    (the ``lm_head`` a base model lacks). Never guessed without a target.

    What decides is how the names match once it is removed, not whether the target has a
    child of that name: a LightningModule's ``self.model`` holding a ``LlamaForCausalLM``
    saves ``model.model.layers...``, read into the causal LM whose own child is ``model``.
    When the target has names under the prefix too, more than half the names carrying it must
    match once it is removed (a real drift, a block more, still leaves most matching): one
    better match is no reason to read a name another way than the target itself spells it.

    >>> attribute_prefix({"model.l1.weight", "model.l1.bias"}, {"l1.weight", "l1.bias"})
    'model.'
    >>> attribute_prefix({"model.l1.weight", "model.norm", "lm_head.weight"}, {"l1.weight", "norm"})
    'model.'
    >>> attribute_prefix({"model.model.l1.weight", "model.lm_head.weight"},
    ...                  {"model.l1.weight", "lm_head.weight"})
    'model.'
    >>> attribute_prefix({"model.l1.weight"}, {"model.l1.weight", "l1.weight"}) is None
    True
    """
    # The cheap checks come first: this runs on every read.
    if not names or not target:
        return None
    prefix = _carried_prefix(names)
    if prefix is None:
        return None
    n = len(prefix)
    stripped = [name[n:] for name in names if name.startswith(prefix)]
    if len(stripped) < len(names) and not names.isdisjoint(stripped):
        return None  # removing it would give two names the same one: not an attribute prefix
    matched = sum(1 for name in stripped if name in target)
    if matched <= len(names & target):
        return None
    if 2 * matched <= len(stripped) and any(t.startswith(prefix) for t in target):
        return None  # the target's own child has that name, and most names would still not match
    return prefix


def attribute_prefix_added(names: AbstractSet[str], target: AbstractSet[str]) -> str | None:
    """The first component ``target``'s names carry and ``names`` lack, when adding it once
    to every name makes more names match: a base model's checkpoint (``LlamaModel``) read
    into a model that holds it as an attribute (``LlamaForCausalLM.model``); else ``None``.

    >>> attribute_prefix_added({"l1.weight", "norm"}, {"model.l1.weight", "model.norm", "lm_head.weight"})
    'model.'
    """
    if not names or not target:
        return None
    prefix = _carried_prefix(target)
    if prefix is None or any(name.startswith(prefix) for name in names):
        return None
    matched = sum(1 for name in names if prefix + name in target)
    return prefix if matched > len(names & target) else None


def _carried_prefix(names: AbstractSet[str]) -> str | None:
    """The first component every name carries, else one that more than half carry; else None."""
    lo, hi = min(names), max(names)
    if "." in lo:
        prefix = lo.split(".", 1)[0] + "."
        if hi.startswith(prefix):
            return prefix  # every name: as in _universal_prefix, the smallest and the largest decide
    counts: dict[str, int] = {}
    for name in names:
        first, dot, rest = name.partition(".")
        if dot and rest:
            counts[first] = counts.get(first, 0) + 1
    if not counts:
        return None
    first, count = max(counts.items(), key=lambda kv: kv[1])
    return first + "." if 2 * count > len(names) else None


# -- live modules ---------------------------------------------------------------------------

def adapter_name(module: torch.nn.Module) -> str | None:
    """The one adapter name a PEFT model puts inside its adapter's names (``lora_A.default.weight``),
    which peft's ``save_pretrained`` leaves out of the file (``lora_A.weight``); ``None`` for
    any other module, and for a model holding several adapters (their names would collide)."""
    config = getattr(module, "peft_config", None)
    if isinstance(config, Mapping) and len(config) == 1:
        return next(iter(config))
    return None


def without_adapter_name(name: str, adapter: str) -> str:
    """``name`` as peft saves it: the adapter's own segment removed after a ``lora_*`` module.

    >>> without_adapter_name("q_proj.lora_A.default.weight", "default")
    'q_proj.lora_A.weight'
    >>> without_adapter_name("q_proj.base_layer.weight", "default")
    'q_proj.base_layer.weight'
    """
    if ".lora_" not in name:
        return name
    parts = name.split(".")
    kept = [p for i, p in enumerate(parts) if not (p == adapter and i and parts[i - 1].startswith("lora_"))]
    return ".".join(kept)


def unwrap(module: torch.nn.Module) -> tuple[torch.nn.Module, tuple[str, ...]]:
    """Peel DataParallel/DDP/torch.compile/FSDP1 wrappers off a live module, by type.

    Returns the innermost module and the prefixes its wrappers add, outermost first.
    """
    stripped: list[str] = []
    while True:
        inner, prefix = _unwrap_once(module)
        if inner is None:
            return module, tuple(stripped)
        stripped.append(prefix)
        module = inner


def _unwrap_once(module: torch.nn.Module):
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    if isinstance(module, (DataParallel, DistributedDataParallel)):
        return module.module, WRAPPER_PREFIXES[0]
    # Only a process that imported dynamo can hold a compiled module; importing it costs seconds.
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    optimized = getattr(eval_frame, "OptimizedModule", None)
    if optimized is not None and isinstance(module, optimized):
        return module._orig_mod, WRAPPER_PREFIXES[1]
    name = type(module).__name__
    if name == "FullyShardedDataParallel" and hasattr(module, "_fsdp_wrapped_module"):
        return module._fsdp_wrapped_module, WRAPPER_PREFIXES[2]
    if name == "CheckpointWrapper" and hasattr(module, "_checkpoint_wrapped_module"):
        return module._checkpoint_wrapped_module, WRAPPER_PREFIXES[3]
    return None, ""
