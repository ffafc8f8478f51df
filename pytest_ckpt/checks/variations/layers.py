"""``layers-1`` / ``layers+1``: the saved model has one block fewer / more than ``config`` says.

The load side is unchanged, so a correct loader must refuse the checkpoint, and its
refusal must name the blocks that differ.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from torch import nn

from ...checkpoint.configs import LAYER_FIELDS, layer_field
from ...compare.ranges import split_block
from .base import SaveJob, Saved, SaveSide, perturb, train_one_step
from .registry import VariationUnavailable


class LayerCountUnknown(ValueError):
    """``config`` has a config but no layer field we can find; pass ``layers_field=``."""


def get_field(config: Any, name: str) -> Any:
    """The value at a dotted field path (``text_config.n_layer``) of a dict, dataclass or object."""
    value = config
    for part in name.split("."):
        value = value[part] if isinstance(value, Mapping) else getattr(value, part)
    return value


def _is_count(config: Any, name: str) -> bool:
    try:
        value = get_field(config, name)
    except (KeyError, AttributeError, TypeError):
        return False
    return isinstance(value, int) and not isinstance(value, bool)


def find_layers_field(config: Any, explicit: str | None = None) -> str:
    """The (dotted) name of ``config``'s layer-count field: ``explicit``, else the one
    :func:`~pytest_ckpt.checkpoint.configs.layer_field` finds (the same finder the reports use).

    >>> find_layers_field({"hidden": 8, "n_layer": 2})
    'n_layer'
    >>> find_layers_field({"text_config": {"n_layer": 2}})
    'text_config.n_layer'
    """
    if explicit is not None:
        if not _is_count(config, explicit):
            raise LayerCountUnknown(f"layers_field={explicit!r} is not an int field of the config")
        return explicit
    name = layer_field(config)
    if name is None:  # a plain object's class-level fields: config_to_dict reads instance ones
        name = next((n for n in LAYER_FIELDS if _is_count(config, n)), None)
    if name is None or not _is_count(config, name):
        raise LayerCountUnknown(
            f"the config has none of the layer fields {', '.join(LAYER_FIELDS)}; "
            "pass layers_field='<name>' to ckpt.roundtrip"
        )
    return name


def with_layers(config: Any, name: str, value: int) -> Any:
    """A copy of ``config`` whose (dotted) field ``name`` is ``value``; ``config`` is untouched.

    Dataclasses go through ``dataclasses.replace`` (so ``__post_init__`` runs), at
    every level of a dotted path; mappings and other objects (e.g. ``transformers``
    configs) are deep-copied and set.

    >>> with_layers({"n_layer": 2}, "n_layer", 1)
    {'n_layer': 1}
    >>> with_layers({"text_config": {"n_layer": 2}, "d": 4}, "text_config.n_layer", 3)
    {'text_config': {'n_layer': 3}, 'd': 4}
    """
    head, _, rest = name.partition(".")
    if rest:
        return _with(config, head, with_layers(get_field(config, head), rest, value))
    return _with(config, name, value)


#: per-layer lists of transformers configs, sized by the layer count (Qwen2/Qwen3's layer_types)
PER_LAYER_FIELDS = ("layer_types",)


def _with(config: Any, name: str, value: Any) -> Any:
    # transformers 5 configs validate that per-layer lists match the count as the count is
    # set: resize them in the same step
    resized = _per_layer(config, name, value)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        fields = {f.name for f in dataclasses.fields(config) if f.init}
        if name in fields and set(resized) <= fields:
            return dataclasses.replace(config, **{name: value, **resized})
    new = copy.deepcopy(config)
    if isinstance(new, MutableMapping):
        new[name] = value
        new.update(resized)
        return new
    for attr, seq in resized.items():
        setattr(new, attr, seq)
    setattr(new, name, value)
    return new


def _per_layer(config: Any, name: str, value: Any) -> dict[str, Any]:
    """The per-layer lists of ``config`` resized for ``value`` layers (the last entry repeats)."""
    get = config.get if isinstance(config, Mapping) else lambda k, d=None: getattr(config, k, d)
    old = get(name, None)
    out = {}
    for attr in PER_LAYER_FIELDS:
        seq = get(attr, None)
        if isinstance(seq, (list, tuple)) and isinstance(old, int) and len(seq) == old and old > 0:
            out[attr] = type(seq)(list(seq[:value]) + [seq[-1]] * max(0, value - old))
    return out


class Layers(SaveSide):
    def __init__(self, delta: int) -> None:
        self.layer_delta = delta
        self.default_save = f"torch.save(model.state_dict()) of a model with {delta:+d} block"

    def produce(self, job: SaveJob) -> Saved:
        if not job.has_config:
            raise VariationUnavailable(
                "needs config= to build a model with one block "
                f"{'fewer' if self.layer_delta < 0 else 'more'}"
            )
        name = find_layers_field(job.config, job.layers_field)
        count = get_field(job.config, name)
        if count + self.layer_delta < 0:
            raise VariationUnavailable(f"{name}={count}: cannot remove a block")
        drifted = with_layers(job.config, name, count + self.layer_delta)
        path = job.directory / f"model{self.suffix}"
        model = save_model(job, drifted, path, self)
        return Saved(path, reference=model, saved_with=self.saved_with(job),
                     layer_delta=self.layer_delta,
                     layers=(name, count + self.layer_delta, count))


def save_model(job: SaveJob, config: Any, path: Path, side: SaveSide) -> nn.Module:
    """Build from ``config``, nudge, save through the project's save (given that config) or
    the plain default; returns the model saved."""
    model = job.build(config)
    perturb(model, job.seed)
    optimizer = train_one_step(model)[0] if "optimizer" in job.save_takes else None
    path.parent.mkdir(parents=True, exist_ok=True)
    if job.save is not None:
        job.call_save(model, path, config=config, optimizer=optimizer)
    else:
        side.write(model, path, job)
    return model


FEWER = Layers(-1)
MORE = Layers(+1)


# -- the refusal ---------------------------------------------------------------------------------

def changed_blocks(saved: nn.Module | Mapping, expected: nn.Module) -> list[str]:
    """Numbered blocks present on one side only, as ``container.index`` (e.g. ``transformer.h.2``)."""
    a = set(saved.state_dict() if isinstance(saved, nn.Module) else saved)
    b = set(expected.state_dict())
    out: list[str] = []
    for key in sorted(a ^ b):
        split = split_block(key)
        if split is not None:
            container, index, _ = split
            block = f"{container}.{index}" if container else str(index)
            if block not in out:
                out.append(block)
    return out


def names_blocks(exc: BaseException, blocks: list[str]) -> bool:
    """Does a loader's refusal say which blocks differ? A ``layer-count`` note of ours, or the
    block in its text: ``h.2``, ``transformer.h.2.attn.weight``, ``h.2-3.*`` all name block 2 of ``h``.

    >>> names_blocks(RuntimeError('Unexpected key(s) in state_dict: "h.2.attn.weight"'), ["h.2"])
    True
    """
    diff = getattr(exc, "diff", None)
    if diff is not None and any(getattr(n, "kind", None) == "layer-count" for n in diff.notes):
        return True
    text = str(exc)
    for block in blocks:
        container, _, index = block.rpartition(".")
        last = container.rpartition(".")[2]
        pattern = (rf"(?<![\w]){re.escape(last)}\.(\d+)(?:\s*(?:-|\.\.|to)\s*(\d+))?(?!\d)"
                   if last else rf"(?<![\w.])(\d+)(?:-(\d+))?\.")
        for m in re.finditer(pattern, text):
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) else lo
            if lo <= int(index) <= hi:
                return True
    return False
