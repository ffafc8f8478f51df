"""Eval-mode outputs of the saved and the reloaded model on the test's ``inputs``, compared."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
from torch import nn

from ..compare.values import max_abs_diff
from .variations.base import call

def compare_outputs(reference: nn.Module, reloaded: nn.Module, inputs: Any, *,
                    atol: float, rtol: float) -> list[str]:
    """Eval-mode outputs of both models on ``inputs``; one line per output that differs."""
    modes = (reference.training, reloaded.training)
    reference.eval()
    reloaded.eval()
    try:
        with torch.no_grad():
            try:
                expected = output_tensors(call(reference, inputs))
            except Exception as exc:  # noqa: BLE001 - the inputs do not fit the model
                return [f"outputs not compared: the saved model raised on inputs= "
                        f"({type(exc).__name__}: {_first_line(exc)})"]
            try:
                actual = output_tensors(call(reloaded, inputs))
            except Exception as exc:  # noqa: BLE001 - said below, with the likely reason
                return [_raised(reference, reloaded, exc)]
    finally:
        reference.train(modes[0])
        reloaded.train(modes[1])
    problems = []
    for name in sorted(set(expected) | set(actual), key=str):
        label = name or "output"
        if name not in actual:
            problems.append(f"{label}: missing from the reloaded model's output")
        elif name not in expected:
            problems.append(f"{label}: only in the reloaded model's output")
        else:
            a, b = expected[name], actual[name]
            if a.shape != b.shape or a.dtype != b.dtype:
                problems.append(f"{label}: {tuple(a.shape)} {a.dtype} -> {tuple(b.shape)} {b.dtype}")
            else:
                # the same comparer as the weights': exact by default, NaN equal to NaN
                delta = max_abs_diff(a.detach(), b.detach(), atol=atol, rtol=rtol)
                if delta is not None:
                    problems.append(f"{label} differs (max |Δ| {delta:.3g}, atol={atol:g}, rtol={rtol:g})")
    return problems


def _raised(reference: nn.Module, reloaded: nn.Module, exc: Exception) -> str:
    """The reloaded model fails on inputs the saved one ran: most often a cast in the load."""
    saved, loaded = _float_dtype(reference), _float_dtype(reloaded)
    what = f"{type(exc).__name__}: {_first_line(exc)}"
    if saved != loaded and loaded is not None:
        name = str(loaded).removeprefix("torch.")
        return (f"outputs not compared: the reloaded model is {name}, the saved model "
                f"{str(saved).removeprefix('torch.')}, and it raised on inputs= ({what}); if your "
                f"load casts on purpose, declare it with ckpt.roundtrip(..., dtype=torch.{name}) "
                "(floating inputs are cast with it)")
    return f"the reloaded model raised on inputs= the saved model ran: {what}"


def _float_dtype(model: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def output_tensors(output: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors inside an output (tensor, tuple, dict, ``ModelOutput``, dataclass) by path."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(output, torch.Tensor):
        out[prefix] = output
    elif isinstance(output, Mapping):
        for key, value in output.items():
            out.update(output_tensors(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(output, (tuple, list)):
        for i, value in enumerate(output):
            out.update(output_tensors(value, f"{prefix}[{i}]"))
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        for f in dataclasses.fields(output):
            out.update(output_tensors(getattr(output, f.name), f"{prefix}.{f.name}" if prefix else f.name))
    return out
