"""The registry of save-side variations: how training may wrap and write a model.

Torch-free, so the plugin can validate marker arguments at collection time;
each variation's code lives in its own module and is imported on first use.

>>> from pytest_ckpt.checks.variations import VARIATIONS, DEFAULT
>>> DEFAULT[:3]
('plain', 'dataparallel', 'ddp')
>>> VARIATIONS["ddp+compile"].summary
'torch.compile(DDP(model)): keys _orig_mod.module.'
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from ...errors import VariationUnavailable

__all__ = ["DEFAULT", "VARIATIONS", "WRAPPING", "UnknownVariation", "Variation", "VariationUnavailable", "narrowing"]


class UnknownVariation(ValueError):
    """A variation name the marker does not know (a selection: neither marker); the message lists the valid ones."""


class Variation(NamedTuple):  # not a dataclass: the plugin imports it at every pytest start-up
    """One variation (of a round trip: a way of wrapping and saving a model; of a resume check: a way
    of running the training); ``impl`` is ``"module:attr"``, imported lazily."""

    name: str
    summary: str
    impl: str

    def load(self):
        """The implementation object (:class:`pytest_ckpt.checks.variations.base.SaveSide` or
        :class:`pytest_ckpt.checks.resume_variations.base.ResumeSide`)."""
        module, _, attr = self.impl.partition(":")
        return getattr(importlib.import_module(module), attr)


def _v(name: str, summary: str, impl: str) -> Variation:
    return Variation(name, summary, f"pytest_ckpt.checks.variations.{impl}")


_ALL = (
    _v("plain", "torch.save(model.state_dict())", "plain:PLAIN"),
    _v("dataparallel", "nn.DataParallel(model): keys module.", "dataparallel:DATAPARALLEL"),
    _v("ddp", "DistributedDataParallel(model) over gloo: keys module.", "ddp:DDP"),
    _v("compile", "torch.compile(model): keys _orig_mod.", "compile:COMPILE"),
    _v("ddp+compile", "torch.compile(DDP(model)): keys _orig_mod.module.", "ddp:DDP_COMPILE"),
    _v("compile+ddp", "DDP(torch.compile(model)): keys module._orig_mod.", "ddp:COMPILE_DDP"),
    _v("fsdp", "FSDP2 fully_shard over 2 processes, sharded DCP save", "fsdp:FSDP"),
    _v("nested", "training state: epoch, step, optimizer, scheduler, rng, weights nested",
       "nested:NESTED"),
    _v("safetensors", "a .safetensors file, tied weights kept", "safetensors:SAFETENSORS"),
    _v("layers-1", "saved with one block fewer than config says; the load must raise",
       "layers:FEWER"),
    _v("layers+1", "saved with one block more than config says; the load must raise",
       "layers:MORE"),
    _v("hf", "save_pretrained(path, max_shard_size=...): sharded safetensors and config.json; "
             "loaded with from_pretrained", "hf:HF_VARIATION"),
    # issue 14: a checkpoint written on 2 ranks, loaded on another world size
    _v("reshard-3", "FSDP2 + DCP saved on 2 ranks, loaded on 3 (uneven shards); weights and optimizer "
       "state compared by name", "reshard:RESHARD_3"),
    _v("reshard-1", "FSDP2 + DCP saved on 2 ranks, loaded on 1; weights and optimizer state compared by name",
       "reshard:RESHARD_1"),
    _v("interrupted", "your save killed at every file boundary; your load must return a whole checkpoint",
       "interrupted:INTERRUPTED"),
)

#: every variation, by exact name, in the documented order
VARIATIONS: dict[str, Variation] = {v.name: v for v in _ALL}
#: what ``@pytest.mark.ckpt_roundtrip()`` runs: every save-side variation but layers-1/layers+1
DEFAULT: tuple[str, ...] = tuple(v.name for v in _ALL[:9])
#: the variations that only wrap the model as some training scripts do (many never do)
WRAPPING: tuple[str, ...] = ("dataparallel", "ddp", "compile", "ddp+compile", "compile+ddp")


def narrowing(variation: str, cause: str) -> str:
    """The line a wrapper variation's failure ends with when its cause is the wrapper's prefix alone:
    training that never wraps its model this way can leave the variation out. ``""`` otherwise.

    >>> print(narrowing("dataparallel", "[prefix] every name your load passes starts with module."))
          or, if your training never runs nn.DataParallel(model): leave dataparallel out (name the variations it runs in the marker, @pytest.mark.ckpt_roundtrip("plain", "compile"), or for every test in ini ckpt_variations = plain,compile)
    """
    if variation not in WRAPPING or not cause.startswith("[prefix]"):
        return ""
    wraps = VARIATIONS[variation].summary.split(":")[0].removesuffix(" over gloo")
    return (f"      or, if your training never runs {wraps}: leave {variation} out (name the variations it runs in "
            f'the marker, @pytest.mark.ckpt_roundtrip("plain", "compile"), or for every test in ini '
            f"ckpt_variations = plain,compile)")
