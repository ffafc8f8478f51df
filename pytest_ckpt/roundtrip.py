"""The ``ckpt`` fixture's object: save as training does, load as inference does, compare.

>>> def test_roundtrip(ckpt):                                   # doctest: +SKIP
...     ckpt.roundtrip(build_model, config=Config(), load=my_inference_load)
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .errors import CheckpointMismatch
from .options import DEFAULT_FSDP_TIMEOUT
from .variations import VARIATIONS, VariationUnavailable
from .variations.base import NO_CONFIG, SaveJob, Saved, call, describe
from .variations.layers import LayerCountUnknown


class Ckpt:
    """One variation's round trips within one test.

    ``variation`` is the variation's name (``"plain"``, ``"ddp+compile"``, ...).
    """

    def __init__(
        self,
        variation: str,
        *,
        directory: Path,
        compile_backend: str = "eager",
        fsdp_timeout: float = DEFAULT_FSDP_TIMEOUT,
        process_group: Callable[[], None] = lambda: None,
        record: Callable[[dict], None] | None = None,
    ) -> None:
        self.variation = variation
        self._directory = Path(directory)
        self._compile_backend = compile_backend
        self._fsdp_timeout = fsdp_timeout
        self._process_group = process_group
        self._record = record
        self._count = 0

    def __repr__(self) -> str:
        return f"<ckpt variation={self.variation!r}>"

    def roundtrip(
        self,
        factory: Callable[..., nn.Module],
        *,
        config: Any = None,
        save: Callable[[nn.Module, Path], Any] | None = None,
        load: Callable[[Path], nn.Module] | None = None,
        inputs: Any = None,
        atol: float = 0.0,
        rtol: float = 0.0,
        layers_field: str | None = None,
    ) -> Any:
        """Save ``factory(config)`` as this variation does, load it back, compare.

        Returns the reloaded model; for ``layers-1``/``layers+1`` the exception
        the load raised. Raises one :class:`CheckpointMismatch` naming the
        variation and the save/load functions, followed by the report.
        """
        __tracebackhide__ = True
        import pytest

        self._count += 1
        suffix = "" if self._count == 1 else f"-{self._count}"
        directory = self._directory / f"ckpt-{self.variation}{suffix}"
        directory.mkdir(parents=True, exist_ok=True)
        job = SaveJob(
            variation=self.variation,
            factory=factory,
            config=NO_CONFIG if config is None else config,
            save=save,
            inputs=inputs,
            directory=directory,
            compile_backend=self._compile_backend,
            fsdp_timeout=self._fsdp_timeout,
            process_group=self._process_group,
            layers_field=layers_field,
        )
        impl = VARIATIONS[self.variation].load()
        try:
            saved = impl.produce(job)
        except VariationUnavailable as exc:
            self._log(outcome="skipped", reason=str(exc))
            pytest.skip(f"ckpt-{self.variation}: {exc}")
        except LayerCountUnknown as exc:
            pytest.fail(f"ckpt-{self.variation}: {exc}", pytrace=False)

        loaded_with = (
            describe(load) if load is not None
            else f"pc.load_into({describe(factory)}({'config' if job.has_config else ''}), path)"
        )
        header = f"ckpt-{self.variation} round trip (saved with {saved.saved_with}, loaded with {loaded_with})"
        if saved.layer_delta:
            return self._expect_refusal(job, saved, load, header)

        reloaded = self._load(job, saved.path, load, header)
        from . import api

        diff = api.diff(saved.reference, reloaded, atol=atol, rtol=rtol)
        problems = []
        if inputs is not None and isinstance(saved.reference, nn.Module):
            problems = compare_outputs(saved.reference, reloaded, inputs, atol=atol, rtol=rtol)
        self._log(outcome="passed" if diff.ok and not problems else "failed",
                  saved_with=saved.saved_with, loaded_with=loaded_with, path=str(saved.path),
                  diff=_to_dict(diff), outputs=problems)
        if not diff.ok or problems:
            report = str(diff)
            if problems:
                report += "\n" + "\n".join(f"  outputs: {p}" for p in problems)
                report += "\n  fix: the outputs depend on state the checkpoint does not carry" \
                          " (a non-persistent buffer or a plain attribute) or on how it is loaded"
            raise CheckpointMismatch(diff, f"{header}: {report}")
        return reloaded

    # -- steps -------------------------------------------------------------------------------

    def _load(self, job: SaveJob, path: Path, load: Callable | None, header: str, *,
              explain: bool = True) -> nn.Module:
        """``load(path)``, or ``pc.load_into`` of a fresh model; ``explain``: when the project's
        load raises, add how pytest-ckpt reads the file to its error."""
        __tracebackhide__ = True
        if load is None:
            from . import api

            model = job.build()
            try:
                api.load_into(model, path)
            except CheckpointMismatch as exc:
                raise CheckpointMismatch(exc.diff, f"{header}: {exc}") from None
            return model
        try:
            reloaded = load(path)
        except Exception as exc:
            note = f"{header}: your load raised on {path}"
            if getattr(exc, "diff", None) is not None:  # the project loads through pc: keep its report
                self._log(outcome="failed", path=str(path), diff=_to_dict(exc.diff))
            elif explain:  # torch's own error lists keys; say what the file holds, one line per cause
                note += "\n" + explain_file(job, path)
            exc.add_note(note)
            raise
        if not isinstance(reloaded, nn.Module):
            raise TypeError(f"{header}: load(path) must return an nn.Module, got {type(reloaded).__name__}")
        return reloaded

    def _expect_refusal(self, job: SaveJob, saved: Saved, load: Callable | None, header: str):
        __tracebackhide__ = True
        import pytest

        field, saved_count, expected_count = saved.layers
        fewer_more = "fewer" if saved.layer_delta < 0 else "more"
        blocks = changed_blocks(saved.reference, job.build())
        what = f"{field}={saved_count} saved, config says {expected_count}"
        try:
            # a refusal is what this variation wants: no explanation to compute
            reloaded = self._load(job, saved.path, load, header, explain=False)
        except Exception as exc:  # noqa: BLE001 - any refusal counts, if it says why
            if names_blocks(exc, blocks):
                self._log(outcome="passed", refused=f"{type(exc).__name__}", layers=what)
                return exc
            self._log(outcome="failed", layers=what)
            pytest.fail(
                f"{header}: your loader refused a checkpoint with one block {fewer_more} ({what}), "
                f"but its error does not name the blocks that differ ({', '.join(blocks) or '?'}):\n"
                f"{type(exc).__name__}: {exc}",
                pytrace=False,
            )
        from . import api

        # expected = what the loader built, actual = what was saved: the report's
        # "checkpoint" is then the drifted checkpoint, its "model" the loader's model
        diff = api.diff(reloaded, saved.reference)
        self._log(outcome="failed", layers=what, diff=_to_dict(diff))
        raise CheckpointMismatch(
            diff,
            f"{header}: your loader accepted a checkpoint with one block {fewer_more} ({what}); "
            f"it should raise\n{diff}",
        )

    def _log(self, **entry: Any) -> None:
        if self._record is not None:
            self._record({"variation": self.variation, **entry})


def explain_file(job: SaveJob, path: Path) -> str:
    """Why a project's own load failed on ``path``, one line per cause, for a note.

    The names, shapes and dtypes in the file are compared with the model the
    factory builds (values are not: the saved weights are nudged on purpose).
    When they match once read as pytest-ckpt reads them (found nested, wrapper
    prefixes stripped), the loader only has to read the file the same way.
    """
    from . import api

    try:
        diff = api.diff(job.build(), path, values=False)
    except Exception as exc:  # noqa: BLE001 - a note must never replace the project's error
        return f"pytest-ckpt could not read it either: {type(exc).__name__}: {exc}"
    if not diff.ok:
        return f"pytest-ckpt, against the model the factory builds: {diff}"
    found = (f"pytest-ckpt finds all {diff.expected_info['tensors']} tensors of the model the factory "
             "builds in it, with their shapes and dtypes")
    how = [f"  [{n.kind}] {n.text}" for n in diff.notes if n.info]
    if not how:
        return f"{found}, read as they are: the failure is in how your load builds or reads the model"
    return "\n".join([
        f"{found}, when it reads the file like this:",
        *how,
        "  fix: read the file the same way in your load (pc.load_into(model, path) does)",
    ])


def _to_dict(diff: Any) -> dict | None:
    try:
        return diff.to_dict()
    except Exception:  # noqa: BLE001 - the record is a courtesy; never fail a test over it
        return None


# -- layer ranges ---------------------------------------------------------------------------

def changed_blocks(saved: nn.Module | Mapping, expected: nn.Module) -> list[str]:
    """Numbered blocks present on one side only, as ``container.index`` (e.g. ``transformer.h.2``)."""
    from .compare.ranges import split_block

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
    """Does ``exc`` say which blocks differ? A library ``layer-count`` note, or the block in its text.

    ``h.2``, ``transformer.h.2.attn.weight``, ``h.2-3.*`` all name block 2 of ``h``.
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


# -- outputs --------------------------------------------------------------------------------

def compare_outputs(reference: nn.Module, reloaded: nn.Module, inputs: Any, *,
                    atol: float, rtol: float) -> list[str]:
    """Eval-mode outputs of both models on ``inputs``; one line per output that differs."""
    modes = (reference.training, reloaded.training)
    reference.eval()
    reloaded.eval()
    try:
        with torch.no_grad():
            expected = flatten(call(reference, inputs))
            actual = flatten(call(reloaded, inputs))
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
            elif not _close(a, b, atol, rtol):
                delta = (a.double() - b.double()).abs().nan_to_num(math.inf).max().item() \
                    if a.is_floating_point() or a.is_complex() else float("nan")
                problems.append(f"{label} differs (max |Δ| {delta:.3g}, atol={atol}, rtol={rtol})")
    return problems


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.is_floating_point() or a.is_complex():
        return bool(torch.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True))
    return bool(torch.equal(a, b))


def flatten(output: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors inside an output (tensor, tuple, dict, ``ModelOutput``, dataclass) by path."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(output, torch.Tensor):
        out[prefix] = output
    elif isinstance(output, Mapping):
        for key, value in output.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(output, (tuple, list)):
        for i, value in enumerate(output):
            out.update(flatten(value, f"{prefix}[{i}]"))
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        for f in dataclasses.fields(output):
            out.update(flatten(getattr(output, f.name), f"{prefix}.{f.name}" if prefix else f.name))
    return out
