"""``layers-1`` / ``layers+1``: the saved model has one block fewer / more than ``config`` says.

The load side is unchanged, so a correct loader must refuse the checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, MutableMapping
from typing import Any

from . import VariationUnavailable
from .base import SaveJob, Saved, SaveSide, perturb

#: the layer-count fields looked for, in this order
LAYER_FIELDS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "depth")


class LayerCountUnknown(ValueError):
    """``config`` has a config but no layer field we can find; pass ``layers_field=``."""


def get_field(config: Any, name: str) -> Any:
    if isinstance(config, Mapping):
        return config[name]
    return getattr(config, name)


def has_field(config: Any, name: str) -> bool:
    try:
        return isinstance(get_field(config, name), int) and not isinstance(
            get_field(config, name), bool
        )
    except (KeyError, AttributeError):
        return False


def find_layers_field(config: Any, explicit: str | None = None) -> str:
    """The name of ``config``'s layer-count field.

    >>> find_layers_field({"hidden": 8, "n_layer": 2})
    'n_layer'
    """
    if explicit is not None:
        if not has_field(config, explicit):
            raise LayerCountUnknown(f"layers_field={explicit!r} is not an int field of the config")
        return explicit
    for name in LAYER_FIELDS:
        if has_field(config, name):
            return name
    raise LayerCountUnknown(
        f"the config has none of the layer fields {', '.join(LAYER_FIELDS)}; "
        "pass layers_field='<name>' to ckpt.roundtrip"
    )


def with_layers(config: Any, name: str, value: int) -> Any:
    """A copy of ``config`` whose ``name`` is ``value``; ``config`` itself is untouched.

    Dataclasses go through ``dataclasses.replace`` (so ``__post_init__`` runs),
    mappings and other objects (e.g. ``transformers`` configs) are deep-copied.

    >>> with_layers({"n_layer": 2}, "n_layer", 1)
    {'n_layer': 1}
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        fields = {f.name for f in dataclasses.fields(config) if f.init}
        if name in fields:
            return dataclasses.replace(config, **{name: value})
    new = copy.deepcopy(config)
    if isinstance(new, MutableMapping):
        new[name] = value
        return new
    old = getattr(new, name)
    setattr(new, name, value)
    # transformers configs carry per-layer lists sized by the layer count (Qwen2's layer_types)
    for attr in ("layer_types",):
        seq = getattr(new, attr, None)
        if isinstance(seq, (list, tuple)) and len(seq) == old and old > 0:
            grown = list(seq[:value]) + [seq[-1]] * max(0, value - old)
            setattr(new, attr, type(seq)(grown))
    return new


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
        model = job.build(with_layers(job.config, name, count + self.layer_delta))
        perturb(model, job.seed)
        path = job.directory / f"model{self.suffix}"
        if job.save is not None:
            job.save(model, path)
        else:
            self.write(model, path, job)
        return Saved(path, reference=model, saved_with=self.saved_with(job),
                     layer_delta=self.layer_delta,
                     layers=(name, count + self.layer_delta, count))


FEWER = Layers(-1)
MORE = Layers(+1)
