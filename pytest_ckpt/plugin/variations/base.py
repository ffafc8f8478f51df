"""What every variation shares: the save job it is given, what it hands back, and the default flow.

A variation's ``produce(job)`` builds the model the training side would hold,
wraps it, saves it, and returns the reference for the comparison: the model
that was actually saved.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..options import DEFAULT_FSDP_TIMEOUT

#: ``job.config`` when the test gave none (``factory()`` is then called without arguments)
NO_CONFIG = object()


@dataclass
class SaveJob:
    """Everything a variation needs to produce a checkpoint."""

    variation: str
    factory: Callable[..., nn.Module]
    config: Any = NO_CONFIG
    #: the project's ``save(model, path)``, or None for the variation's default
    save: Callable[[nn.Module, Path], Any] | None = None
    inputs: Any = None
    directory: Path = Path(".")
    compile_backend: str = "eager"
    #: seconds the fsdp variation's ranks may take (ini ckpt_fsdp_timeout)
    fsdp_timeout: float = DEFAULT_FSDP_TIMEOUT
    #: opens (or reuses) the single-process gloo group; called by the DDP variations
    process_group: Callable[[], None] = lambda: None
    layers_field: str | None = None

    @property
    def has_config(self) -> bool:
        return self.config is not NO_CONFIG

    @property
    def seed(self) -> int:
        return zlib.crc32(self.variation.encode())

    def build(self, config: Any = NO_CONFIG) -> nn.Module:
        """``factory(config)`` (or ``factory()`` when the test gave no config)."""
        config = self.config if config is NO_CONFIG else config
        return self.factory() if config is NO_CONFIG else self.factory(config)


@dataclass
class Saved:
    """A checkpoint on disk and what it should hold."""

    path: Path
    #: the model that was saved (unwrapped), or its full state dict when only that is known
    reference: nn.Module | Mapping[str, torch.Tensor]
    #: how it was saved, for messages: the project's function or the default's description
    saved_with: str
    #: layers-1/layers+1: the layer field, its value in the saved model and in ``config``
    layer_delta: int = 0
    layers: tuple[str, int, int] | None = None
    extra: dict = field(default_factory=dict)


class SaveSide:
    """The default flow: build, nudge, wrap, save. Subclasses override ``wrap`` and ``write``."""

    suffix = ".pt"
    default_save = "torch.save(model.state_dict())"
    layer_delta = 0

    def produce(self, job: SaveJob) -> Saved:
        model = job.build()
        perturb(model, job.seed)
        wrapped = self.wrap(model, job)
        path = job.directory / f"model{self.suffix}"
        if job.save is not None:
            job.save(wrapped, path)
        else:
            self.write(wrapped, path, job)
        return Saved(path, reference=model, saved_with=self.saved_with(job))

    def wrap(self, model: nn.Module, job: SaveJob) -> nn.Module:
        return model

    def write(self, wrapped: nn.Module, path: Path, job: SaveJob) -> None:
        torch.save(wrapped.state_dict(), path)

    def saved_with(self, job: SaveJob) -> str:
        return describe(job.save) if job.save is not None else self.default_save


def describe(fn: Callable | None) -> str:
    """``module.qualname`` of a function, for messages."""
    if fn is None:
        return "-"
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}.{name}" if module and module != "builtins" else name


@torch.no_grad()
def perturb(model: nn.Module, seed: int) -> None:
    """Nudge every saved floating tensor with a private generator.

    Why: factories often seed themselves, so a fresh model can equal the saved
    one; after this, a loader that loads nothing can never pass. Non-persistent
    buffers are left alone (they are not saved, so the reload rebuilds them).
    """
    generator = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    for tensor in model.state_dict(keep_vars=True).values():
        if id(tensor) in seen or not isinstance(tensor, torch.Tensor):
            continue
        seen.add(id(tensor))
        if not tensor.is_floating_point() or tensor.numel() == 0 or tensor.is_meta:
            continue
        u = torch.rand(tensor.shape, generator=generator).to(tensor.device)
        tensor.data.copy_((tensor.data.float() * (1 + 0.05 * u) + 0.01 * u).to(tensor.dtype))


def call(model: nn.Module, inputs: Any) -> Any:
    """Run ``model`` on a tensor, a tuple of positional arguments, or a dict of keyword ones."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


@torch.no_grad()
def warm_up(wrapped: nn.Module, inputs: Any) -> None:
    """One eval-mode forward through the wrapper, so a compiled model has really compiled."""
    if inputs is None:
        return
    was_training = wrapped.training
    wrapped.eval()
    try:
        call(wrapped, inputs)
    finally:
        wrapped.train(was_training)
