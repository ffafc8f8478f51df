"""The ``ckpt`` fixture's object: save as training does, load as inference does, compare.

>>> def test_roundtrip(ckpt):                                   # doctest: +SKIP
...     ckpt.roundtrip(build_model, config=Config(), load=my_inference_load)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torch import nn

from .. import api
from ..errors import CheckpointMismatch
from .options import DEFAULT_FSDP_TIMEOUT
from .outputs import compare_outputs
from .variations import VARIATIONS, VariationUnavailable
from .variations.base import NO_CONFIG, SaveJob, Saved, describe
from .variations.layers import LayerCountUnknown, changed_blocks, names_blocks


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
            model = job.build()
            try:
                api.load_into(model, path)
            except CheckpointMismatch as exc:
                self._log(outcome="failed", path=str(path), diff=_to_dict(exc.diff))
                raise CheckpointMismatch(exc.diff, f"{header}: {exc}") from None
            return model
        try:
            reloaded = load(path)
        except Exception as exc:
            note = f"{header}: your load raised on {path}"
            if getattr(exc, "diff", None) is not None:  # the project loads through pc: keep its report
                self._log(outcome="failed", path=str(path), diff=_to_dict(exc.diff))
            elif explain:  # torch's own error lists keys; say what the file holds, one line per cause
                text, cause = explain_file(job, path)
                note += "\n" + text
                self._log(outcome="failed", path=str(path), cause=cause)
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


def explain_file(job: SaveJob, path: Path) -> tuple[str, str]:
    """Why a project's own load failed on ``path``, one line per cause, for a note; and the
    line that leads it (``[kind] text``, empty when pytest-ckpt cannot read the file either).

    The names, shapes and dtypes in the file are compared with the model the
    factory builds (values are not: the saved weights are nudged on purpose).
    When they match once read as pytest-ckpt reads them (found nested, wrapper
    prefixes stripped), the loader only has to read the file the same way.
    """
    try:
        diff = api.diff(job.build(), path, values=False)
    except Exception as exc:  # noqa: BLE001 - a note must never replace the project's error
        return f"pytest-ckpt could not read it either: {type(exc).__name__}: {exc}", ""
    leading = next((n for n in diff.notes if not n.info), diff.notes[0] if diff.notes else None)
    cause = f"[{leading.kind}] {leading.text}" if leading is not None else ""
    if not diff.ok:
        return f"pytest-ckpt, against the model the factory builds: {diff}", cause
    found = (f"pytest-ckpt finds all {diff.expected_info['tensors']} tensors of the model the factory "
             "builds in it, with their shapes and dtypes")
    how = [f"  [{n.kind}] {n.text}" for n in diff.notes if n.info]
    if not how:
        return f"{found}, read as they are: the failure is in how your load builds or reads the model", cause
    return "\n".join([
        f"{found}, when it reads the file like this:",
        *how,
        "  fix: read the file the same way in your load (pc.load_into(model, path) does)",
    ]), cause


def _to_dict(diff: Any) -> dict | None:
    try:
        return diff.to_dict()
    except Exception:  # noqa: BLE001 - the record is a courtesy; never fail a test over it
        return None
