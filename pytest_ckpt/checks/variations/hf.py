"""``hf``: transformers' own save and load. ``model.save_pretrained(path, max_shard_size=...)``
writes sharded safetensors (an index, shards, config.json; tied weights per the model's
``_tied_weights_keys`` written once), and ``type(model).from_pretrained(path)`` is the default
load, so a round trip checks what a Hub user would get back.

The shard size is a third of the model, so even a tiny test model is written in several shards.
A factory that does not build a ``PreTrainedModel`` has no ``save_pretrained``: skipped, saying so.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .base import SaveJob, Saved, SaveSide
from .registry import VariationUnavailable

#: how many shards the default save aims for
SHARDS = 3


class HF(SaveSide):
    suffix = ""  # save_pretrained writes a directory
    default_save = f"model.save_pretrained(path, max_shard_size=<a {SHARDS}rd of the model>)"

    def write(self, wrapped: nn.Module, path: Path, job: SaveJob) -> None:
        if not _pretrained(wrapped):
            raise VariationUnavailable(
                f"the factory builds a {type(wrapped).__name__}, not a transformers PreTrainedModel: "
                "it has no save_pretrained/from_pretrained to round-trip")
        wrapped.save_pretrained(path, max_shard_size=max(1, _nbytes(wrapped) // SHARDS))

    def produce(self, job: SaveJob) -> Saved:
        saved = super().produce(job)
        model = saved.reference
        if _pretrained(model):
            cls = type(model)
            saved.extra["default_load"] = (f"{cls.__name__}.from_pretrained(path)", cls.from_pretrained)
        return saved


def _pretrained(model: nn.Module) -> bool:
    return callable(getattr(model, "save_pretrained", None)) and callable(
        getattr(type(model), "from_pretrained", None))


def _nbytes(model: nn.Module) -> int:
    seen, total = set(), 0
    for t in model.state_dict().values():
        if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


HF_VARIATION = HF()
