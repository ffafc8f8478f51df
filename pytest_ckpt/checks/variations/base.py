"""What every variation shares: the save job it is given, what it hands back, and the default flow.

A variation's ``produce(job)`` builds the model the training side would hold,
wraps it, saves it, and returns the reference for the comparison: the model
that was actually saved.
"""

from __future__ import annotations

import inspect
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ...processes.timeouts import DEFAULT_FSDP_TIMEOUT

#: ``job.config`` when the test gave none (``factory()`` is then called without arguments)
NO_CONFIG = object()
#: keywords a project's ``save`` may take, passed only when its signature names them
SAVE_KEYWORDS = ("config", "optimizer")


class FactoryError(Exception):
    """The test's factory raised while building a model: nothing was saved."""


def named_parameters(fn: Callable) -> set[str]:
    """The parameter names ``fn``'s signature spells out (``**kwargs`` names none)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


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
    #: reshard-N: the project's load on each loading rank, ``load_sharded(model, path)`` (None: DCP's)
    load_sharded: Callable[..., Any] | None = None

    @property
    def has_config(self) -> bool:
        return self.config is not NO_CONFIG

    @property
    def seed(self) -> int:
        return zlib.crc32(self.variation.encode())

    def build(self, config: Any = NO_CONFIG) -> nn.Module:
        """``factory(config)`` (or ``factory()`` when the test gave no config); raises
        :class:`FactoryError` (from the factory's own error) when the factory raises."""
        __tracebackhide__ = True
        config = self.config if config is NO_CONFIG else config
        try:
            return self.factory() if config is NO_CONFIG else self.factory(config)
        except Exception as exc:
            call = f"{describe(self.factory)}({'' if config is NO_CONFIG else 'config'})"
            raise FactoryError(f"the factory {call} raised {type(exc).__name__}: {exc}") from exc

    @property
    def load_sharded_takes(self) -> set[str]:
        """The keywords of :data:`SAVE_KEYWORDS` the project's ``load_sharded`` names."""
        return (named_parameters(self.load_sharded) & set(SAVE_KEYWORDS) if self.load_sharded is not None
                else set())

    @property
    def save_takes(self) -> set[str]:
        """The keywords of :data:`SAVE_KEYWORDS` the project's ``save`` names."""
        return named_parameters(self.save) & set(SAVE_KEYWORDS) if self.save is not None else set()

    def load_fresh(self, path: Path, *, dtype: torch.dtype | None = None, only: Any = None) -> nn.Module:
        """The default load: ``pc.load_into(factory(config), path)``, with the round trip's declared
        cast and name patterns; raises what ``pc.load_into`` raises."""
        from ... import api

        model = self.build()
        api.load_into(model, path, only=only, dtype=dtype)
        return model

    def call_save(self, model: nn.Module, path: Path, *, config: Any = NO_CONFIG,
                  optimizer: Any = None) -> None:
        """The project's ``save(model, path)``, with ``config=``/``optimizer=`` when it names them."""
        assert self.save is not None
        kw: dict[str, Any] = {}
        takes = self.save_takes
        if "config" in takes:
            config = self.config if config is NO_CONFIG else config
            kw["config"] = None if config is NO_CONFIG else config
        if "optimizer" in takes:
            kw["optimizer"] = optimizer
        try:
            self.save(model, path, **kw)
        except AttributeError as exc:
            said = misused(exc, model, path, self.save, self.variation)
            if said is None:
                raise
            raise SaveCallError(f"ckpt-{self.variation}: {said}") from exc


class SaveCallError(TypeError):
    """The project's save cannot take what the round trip hands it: its arguments are the other way
    round, or it calls a method of the bare model on the wrapper a variation hands it."""


def misused(exc: AttributeError, model: Any, path: Any, save: Callable, variation: str) -> str | None:
    """What an ``AttributeError`` from the project's ``save(model, path)`` says about how it takes
    its arguments, in one line with the fix; ``None`` when it says nothing about them.

    >>> from pathlib import Path
    >>> def save(path, model): model.state_dict()
    >>> model, path = nn.Linear(1, 1), Path("m.pt")
    >>> try: save(model, path)
    ... except AttributeError as exc: print(misused(exc, model, path, save, "plain"))
    your save pytest_ckpt.checks.variations.base.save(path, model) called .state_dict() on the path: the round trip calls save(model, path), the model first; fix: take (model, path) in your save, or pass save=lambda model, path: pytest_ckpt.checks.variations.base.save(path, model)
    """
    name, obj = getattr(exc, "name", None), getattr(exc, "obj", None)
    if name is None or obj is None:
        return None
    what = f"{describe(save)}{signature_text(save)}"
    if obj is path and hasattr(model, name):
        return (f"your save {what} called .{name}() on the path: the round trip calls save(model, path), "
                f"the model first; fix: take (model, path) in your save, or pass "
                f"save=lambda model, path: {describe(save)}(path, model)")
    if obj is model and isinstance(model, nn.Module):
        from ...checkpoint.canonical import unwrap

        inner = unwrap(model)[0]
        if inner is not model and hasattr(inner, name):
            wrapper = type(model).__name__
            return (f"your save {what} called .{name}() on the {wrapper} the {variation} variation hands it, "
                    f"and {wrapper} has no {name}: it wraps your model; fix: call it on the model inside "
                    f"(model.module.{name}(...), or accelerate's unwrap_model(model)), as a save from a "
                    f"wrapped training run must")
    return None


def signature_text(fn: Callable) -> str:
    """``(model, path)``: a function's signature, for messages (empty when it has none to show)."""
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return ""


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
    #: the wrapper prefixes the variation's wrappers add to every name, outermost first
    wrapped_by: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)
    #: what the variation loaded itself (reshard-N: gathered from the loading ranks); None: the round
    #: trip loads ``path`` with the project's load
    reloaded: Any = None
    #: how the variation loaded it, for messages
    loaded_with: str | None = None
    #: ``explain(diff) -> Note | None``: the variation's own cause for a failed diff (it leads the report)
    explain: Callable[[Any], Any] | None = None


class SaveSide:
    """The default flow: build, nudge, wrap, save. Subclasses override ``wrap`` and ``write``."""

    suffix = ".pt"
    default_save = "torch.save(model.state_dict())"
    layer_delta = 0

    def produce(self, job: SaveJob) -> Saved:
        model = job.build()
        perturb(model, job.seed)
        # a save that takes the optimizer gets a real one, after one step (before wrapping:
        # the wrappers share the parameters, and DDP needs no backward of its own)
        optimizer = train_one_step(model)[0] if "optimizer" in job.save_takes else None
        wrapped = self.wrap(model, job)
        path = job.directory / f"model{self.suffix}"
        if job.save is not None:
            job.call_save(wrapped, path, optimizer=optimizer)
        else:
            self.write(wrapped, path, job)
        return Saved(path, reference=model, saved_with=self.saved_with(job),
                     wrapped_by=wrapper_prefixes(wrapped))

    def wrap(self, model: nn.Module, job: SaveJob) -> nn.Module:
        return model

    def write(self, wrapped: nn.Module, path: Path, job: SaveJob) -> None:
        torch.save(wrapped.state_dict(), path)

    def saved_with(self, job: SaveJob) -> str:
        return describe(job.save) if job.save is not None else self.default_save


def wrapper_prefixes(wrapped: nn.Module) -> tuple[str, ...]:
    from ...checkpoint.canonical import unwrap

    return unwrap(wrapped)[1]


def train_one_step(model: torch.nn.Module):
    """One AdamW step on a loss of the weights themselves (needs no inputs), then a scheduler
    step: a real optimizer and scheduler state, as training's save would see them."""
    params = [p for p in model.parameters() if p.requires_grad and p.is_floating_point()]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    if params:
        loss = sum((p.float() ** 2).sum() for p in params)
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return optimizer, scheduler


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
