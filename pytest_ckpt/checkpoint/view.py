"""One side of a comparison: a source resolved to canonical names."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Mapping

import torch

from .notes import Note
from .schema import Schema


_is_meta = attrgetter("is_meta")


def dataless(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of meta tensors: in a source read with its values, tensors saved without data."""
    return sorted(name for name, t in tensors.items() if t.is_meta)


def holds_values(tensors: Mapping[str, torch.Tensor]) -> bool:
    """True unless some tensor is a meta tensor (read for its schema only)."""
    return not any(map(_is_meta, tensors.values()))  # map runs at C speed: once per tensor


@dataclass(frozen=True)
class PartialModel:
    """A training state's model that lacks tensors another mapping beside it holds (an EMA, a
    copy): ``read`` was read, as the training state names it the model; ``rival`` fits the
    other side better; ``lacking``: the canonical names ``rival`` holds and ``read`` lacks."""

    read: tuple[str | int, ...]
    rival: tuple[str | int, ...]
    lacking: tuple[str, ...]


@dataclass
class View:
    """A source located and canonicalized, ready to compare.

    ``tensors`` maps canonical names to tensors; they are meta tensors when
    only the schema was read (``has_values`` False). ``ties`` are groups of
    canonical names sharing storage, or ``None`` when the format cannot express
    sharing. ``config`` is the config known for this side (stored by
    ``pc.save``, or a model's ``.config``) as a plain dict.
    """

    label: str
    schema: Schema
    tensors: Mapping[str, torch.Tensor]
    has_values: bool = False
    ties: list[tuple[str, ...]] | None = None
    config: dict[str, Any] | None = None
    notes: list[Note] = field(default_factory=list)
    format: str = "state-dict"
    #: metadata written by pc.save (schema, config hash, ...), when present
    stored: dict[str, Any] | None = None
    #: the live module, when the source is one
    module: torch.nn.Module | None = None
    #: canonical name -> name in the source (before stripping), for loading back
    source_names: dict[str, str] = field(default_factory=dict)
    #: what explanations call this side when it is the one compared against the model
    noun: str = "checkpoint"
    #: a config the training state keeps beside the weights (nanoGPT's ``model_args``),
    #: ``(where, config)``: shown by inspect, never compared (only ``pc.save``'s is)
    found_config: tuple[str, dict[str, Any]] | None = None
    #: what explanations call this side when it is the expected one ("the model"; a file
    #: compared as the expected side, as ``pytest-ckpt diff a.pt b.pt`` does: "checkpoint a.pt")
    expected_noun: str = "model"
    #: the file's name, when this side is a file: two files compared are each called by theirs
    name: str | None = None
    #: how this side's block count is said when it is the expected one and code built it
    #: ("your load built"); None: "the <expected_noun> has"
    built: str | None = None
    #: whose code made this side, when a fix must point at that code: "load" or "save"
    made_by: str | None = None
    #: names read with values whose tensors hold no data (a meta tensor was saved): each a
    #: cause, while the other tensors' values are still compared
    dataless: list[str] = field(default_factory=list)
    #: an attribute prefix undone to match the other side: ``("model.", "removed")`` (a
    #: LightningModule's self.model, a ...ForCausalLM read into its base model) or
    #: ``("model.", "added")`` (a base model's checkpoint read into the model holding it)
    attribute_prefix: tuple[str, str] | None = None
    #: the framework that wrote the file (:func:`~.frameworks.saved_by`), when known
    saved_by: Any = None
    #: the training state's model was read although another mapping fits better: it is partial
    partial: PartialModel | None = None
    #: this side's tensors as its model is built, before any load (a round trip's fresh
    #: factory()): a tensor still equal to them was never loaded
    fresh: Mapping[str, torch.Tensor] | None = None
    #: the file this side was loaded from, as pytest-ckpt reads it (a round trip's checkpoint):
    #: its wrapper prefixes explain a load that matched no name
    read_from: "View | None" = None
    #: the CRCs of this file's records left to the comparison of its values (read with
    #: ``defer_crcs=True``): :func:`~pytest_ckpt.compare.compare.compare` checks them
    crcs: Any = None

    @classmethod
    def of_tensors(cls, label: str, tensors: Mapping[str, torch.Tensor], **kw) -> "View":
        """A view of a plain canonical ``{name: tensor}`` mapping (handy in tests)."""
        tensors = dict(tensors)
        has_values = kw.pop("has_values", holds_values(tensors))
        return cls(label=label, schema=Schema.of(tensors), tensors=tensors,
                   has_values=has_values, **kw)

    def info(self) -> dict:
        return {
            "label": self.label,
            "format": self.format,
            "tensors": len(self.schema),
            "located_at": list(self.schema.located_at),
            "stripped": list(self.schema.stripped),
            "config": self.config,
        }
