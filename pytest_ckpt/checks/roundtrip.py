"""``pc.check_roundtrip``: save as training does, load as inference does, compare.

>>> report = pc.check_roundtrip(build_model, variation="ddp", config=Config(), load=load_for_inference)  # doctest: +SKIP
>>> print(report)                                                                                    # doctest: +SKIP
ckpt-ddp round trip (saved with torch.save(DDP(model).state_dict()), loaded with ...): ok: 12 tensors match exactly

A failure's first line names its cause; the report under it speaks of the saved model, the
reloaded model and the checkpoint, and aims its fix at the code that must change: when the
file itself differs from the saved model, your save; otherwise your load
(:mod:`pytest_ckpt.checks.explain`). The ``ckpt`` fixture's ``roundtrip`` is this call.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .. import api
from ..checkpoint.configs import readable_config
from ..checkpoint.resolve import module_view
from ..checkpoint.view import View
from ..compare import load_error
from ..compare.rules.context import plural
from ..errors import TRIM_ATTR, CheckpointMismatch
from ..processes.timeouts import DEFAULT_FSDP_TIMEOUT
from . import explain
from .outputs import compare_outputs
from .report import RoundTripReport, attach
from .scope import check_scope
from .variations import VARIATIONS, UnknownVariation
from .variations.registry import narrowing
from .variations.base import (NO_CONFIG, SAVE_KEYWORDS, FactoryError, SaveJob, Saved, describe,
                              named_parameters, signature_text)
from .variations.layers import LayerCountUnknown, changed_blocks, names_blocks, save_model


class UnnamedRefusal(AssertionError):
    """``layers-1``/``layers+1``: the project's load refused the checkpoint of another depth without
    naming the blocks that differ. ``report``: the :class:`RoundTripReport`."""


def check_roundtrip(
    factory: Callable[..., nn.Module],
    *,
    variation: str = "plain",
    config: Any = None,
    save: Callable[..., Any] | None = None,
    load: Callable[[Path], nn.Module] | None = None,
    inputs: Any = None,
    atol: float = 0.0,
    rtol: float = 0.0,
    dtype: torch.dtype | None = None,
    layers_field: str | None = None,
    outputs_atol: float | None = None,
    outputs_rtol: float | None = None,
    only: str | list[str] | None = None,
    load_sharded: Callable[..., Any] | None = None,
    workdir: str | Path | None = None,
    compile_backend: str = "eager",
    fsdp_timeout: float = DEFAULT_FSDP_TIMEOUT,
    process_group: Callable[[], None] | None = None,
) -> RoundTripReport:
    """Save ``factory(config)`` as ``variation`` does, load it back, compare: one round trip of
    ``@pytest.mark.ckpt_roundtrip(variation)``, from a script, a notebook or another test runner.

    ``save(model, path)`` may also take ``config=`` and ``optimizer=`` (passed when its
    signature names them: the config the model was built from, a real AdamW after one
    step). ``dtype``: a cast the load (or the save) makes on purpose; the default load reads
    the file with it (``pc.load_into(..., dtype=)``), and the saved model is compared after
    that cast, exactly (rounded to it, in the dtype the load returned). ``outputs_atol``/``outputs_rtol``: the outputs'
    own tolerance (default: the weights'). ``only``: glob patterns of the names compared
    (and loaded by the default load): a LoRA adapter's ``"*lora_*"``, when the load puts
    it on a freshly built base. ``load_sharded(model, path)``: under ``reshard-N``,
    the project's load on each loading rank into the ``fully_shard``'ed model (may take
    ``optimizer=``, ``config=``); other variations ignore it. ``workdir``: where the checkpoint
    is written (a temporary directory, removed afterwards, by default); ``compile_backend``: the
    ``torch.compile`` backend of the compile variations; ``fsdp_timeout``: seconds the ranks of
    the process variations may take. The ``ddp`` variations open a one-process gloo group when
    none is open, and close it before returning (``process_group``: a function that opens or reuses
    the group instead, and keeps it; the pytest fixture's, closed after the test).

    Returns the :class:`RoundTripReport` (``.reloaded``: the reloaded model; for
    ``layers-1``/``layers+1`` the exception the load raised; for ``interrupted``, ``.interrupted``
    holds every kill's outcome). Raises one :class:`~pytest_ckpt.errors.CheckpointMismatch` whose
    first line names the cause (``interrupted``: :class:`~pytest_ckpt.errors.InterruptedMismatch`),
    :class:`~pytest_ckpt.errors.VariationUnavailable` (with the reason) where the variation cannot
    run here.
    """
    __tracebackhide__ = True
    if variation not in VARIATIONS:
        raise UnknownVariation(f"check_roundtrip: unknown variation {variation!r}; valid: {', '.join(VARIATIONS)}")
    check_arguments(factory, config=config, save=save, load=load)
    with check_scope(workdir, variation, process_group) as (directory, process_group):
        job = SaveJob(
            variation=variation,
            factory=factory,
            config=NO_CONFIG if config is None else config,
            save=save,
            inputs=inputs,
            directory=directory,
            compile_backend=compile_backend,
            fsdp_timeout=fsdp_timeout,
            process_group=process_group,
            layers_field=layers_field,
            load_sharded=load_sharded,
        )
        compare = _Compare(atol=atol, rtol=rtol, config=readable_config(config), dtype=dtype, only=only)
        return RoundTrip(job, compare).run(load, inputs=inputs, outputs_atol=outputs_atol,
                                           outputs_rtol=outputs_rtol)


class RoundTrip:
    """One round trip's steps: produce the checkpoint, load it, compare, explain; each way it ends
    makes the :class:`RoundTripReport` (a failure raises, carrying it)."""

    def __init__(self, job: SaveJob, compare: "_Compare") -> None:
        self.job, self.compare, self.variation = job, compare, job.variation
        self._started = time.perf_counter()
        #: how it was saved and loaded, and where: known once the variation has produced the checkpoint
        self._sides: dict[str, str] = {}
        #: the CPU random state right before the load (a fresh build from it is what a skipped load leaves)
        self._rng: torch.Tensor | None = None

    def _report(self, ok: bool, text: str, **fields: Any) -> RoundTripReport:
        return RoundTripReport(self.variation, ok, text=text, seconds=time.perf_counter() - self._started,
                               **fields)

    def _passed(self, text: str, **fields: Any) -> RoundTripReport:
        return self._report(True, text, **fields)

    def _failed(self, exc: BaseException, **fields: Any) -> BaseException:
        """``exc``, carrying this round trip's report of the failure it says."""
        narrow = narrowing(self.variation, fields.get("cause") or "")  # a wrapper the training may never use
        if narrow and len(exc.args) == 1 and isinstance(exc.args[0], str):
            exc.args = (f"{exc.args[0]}\n{narrow}",)
        return attach(exc, self._report(False, str(exc), **fields))

    def run(self, load: Callable | None, *, inputs: Any, outputs_atol: float | None,
            outputs_rtol: float | None) -> RoundTripReport:
        __tracebackhide__ = True
        job, compare = self.job, self.compare
        factory, atol, rtol, dtype, only = job.factory, compare.atol, compare.rtol, compare.dtype, compare.only
        impl = VARIATIONS[self.variation].load()
        try:
            if getattr(impl, "runs_load", False):  # interrupted: one load per kill, its own report
                return self._check_itself(impl, job, factory, load)
            saved = impl.produce(job)
        except LayerCountUnknown as exc:
            raise LayerCountUnknown(f"ckpt-{self.variation}: {exc}") from None
        except FactoryError as exc:  # the factory's own error stays its cause, shown above ours
            raise FactoryError(f"ckpt-{self.variation}: {exc}") from exc.__cause__

        if load is None and saved.extra.get("default_load") is not None:
            loaded_with, load = saved.extra["default_load"]  # the variation's own (hf: from_pretrained)
        else:
            loaded_with = saved.loaded_with or _loaded_with(factory, load, job.has_config)
        header = f"ckpt-{self.variation} round trip (saved with {saved.saved_with}, loaded with {loaded_with})"
        self._sides = {"saved_with": saved.saved_with, "loaded_with": loaded_with, "path": str(saved.path)}
        if saved.layer_delta:
            return self._expect_refusal(job, saved, load, header, compare)

        reloaded = saved.reloaded if saved.reloaded is not None else self._load(job, saved, load, header, compare)
        reference, expected, actual = compare.sides(saved.reference, reloaded)
        diff = api.diff(expected, actual, atol=atol, rtol=rtol, configs=(compare.config, None),
                        only=only)
        if not diff.ok and saved.reloaded is None:
            # evidence for the load's own causes, gathered only when it failed: the file as it read it, a fresh build
            explain.add_evidence(actual, saved.path, like=expected, fresh=self._fresh_build(job))
            diff = api.diff(expected, actual, atol=atol, rtol=rtol, configs=(compare.config, None), only=only)
        problems: list[str] = []
        if inputs is not None and isinstance(reference, nn.Module):
            problems = compare_outputs(
                reference, reloaded, _cast_inputs(inputs, dtype if _holds(actual, dtype) else None),
                atol=atol if outputs_atol is None else outputs_atol,
                rtol=rtol if outputs_rtol is None else outputs_rtol)
        if diff.ok and not problems:
            outputs = ", and the outputs match" if inputs is not None and isinstance(reference, nn.Module) else ""
            return self._passed(f"{header}: {str(diff).splitlines()[0]}{outputs}", diff=diff, reloaded=reloaded,
                                **self._sides)

        body: list[str] = []
        shown = diff
        cause = explain.lead(diff)
        own = saved.explain(diff) if saved.explain is not None and not diff.ok else None
        if own is not None:  # the variation knows the cause (reshard: rows in another order)
            cause = f"[{own.kind}] {own.text}"
            body.append(f"  {cause}\n      fix: {own.fix}")
        if not diff.ok:
            wrong = compare.file_differs(saved) if saved.reloaded is None else None
            if wrong is not None:  # the file itself is not the saved model: the save is at fault
                shown, cause = wrong, explain.lead(wrong)
                own_diff = explain.against_file(saved.path, actual, like=expected, dtype=dtype)
                body += [str(wrong), explain.carried(diff, own_diff)]
            else:
                body.append(str(diff))
        if problems:
            if diff.ok:
                cause = f"[outputs] {problems[0]}"
                body.append(f"the weights match ({diff}); the outputs do not:")
            body += [f"  outputs: {p}" for p in problems]
            if any(" differs (max " in p for p in problems):
                body.append("      fix: " + _outputs_fix(expected, actual, diff, atol, rtol))
        raise self._failed(CheckpointMismatch(shown, f"{header}: {cause}\n" + "\n".join(body)),
                           diff=shown, outputs=problems, cause=cause, **self._sides)

    def _check_itself(self, impl: Any, job: SaveJob, factory: Callable, load: Callable | None) -> Any:
        __tracebackhide__ = True
        loaded_with = _loaded_with(factory, load, job.has_config)
        sides = {"saved_with": describe(job.save), "loaded_with": loaded_with}
        try:
            report = impl.check(job, load, loaded_with=loaded_with, dtype=self.compare.dtype)
        except AssertionError as exc:
            raise self._failed(exc, cause=str(exc).splitlines()[0], interrupted=getattr(exc, "report", None),
                               **sides)
        return self._passed(str(report), interrupted=report, **sides)

    # -- steps -------------------------------------------------------------------------------

    def _fresh_build(self, job: SaveJob) -> dict | None:
        """The tensors a fresh ``factory()`` holds, built from the random state the load started from:
        a reloaded tensor still equal to one was never loaded. ``None`` when it cannot be built."""
        if self._rng is None:
            return None
        try:
            with torch.random.fork_rng(devices=[]):
                torch.random.set_rng_state(self._rng)
                return dict(module_view(job.build()).tensors)
        except Exception:  # noqa: BLE001 - evidence only: the report stands without it
            return None

    def _load(self, job: SaveJob, saved: Saved, load: Callable | None, header: str,
              compare: "_Compare") -> nn.Module:
        """``load(path)``, or ``pc.load_into`` of a fresh model. When it raises, the failure
        is explained: the file is checked against the saved model first (a wrong file is
        the save's doing), then the load's own error is read as evidence."""
        __tracebackhide__ = True
        self._rng = torch.random.get_rng_state()  # what the load's own factory() call starts from
        if load is None:
            try:
                return job.load_fresh(saved.path, dtype=compare.dtype, only=compare.only)
            except CheckpointMismatch as exc:
                self._load_failed(exc, None, saved, header, compare)
        with explain.TransformersLog() as log:
            try:
                reloaded = load(saved.path)
            except Exception as exc:
                self._load_failed(exc, explain.raised(exc, log.text), saved, header, compare)
        if not isinstance(reloaded, nn.Module):
            raise TypeError(f"{header}: load(path) must return an nn.Module, got {type(reloaded).__name__}")
        return reloaded

    def _load_failed(self, exc: Exception, failure: "explain.Raised | None", saved: Saved,
                     header: str, compare: "_Compare") -> None:
        """Raise the explained failure of a load that raised."""
        __tracebackhide__ = True
        said = (failure.text() if failure is not None
                else f"pc.load_into refused it: {explain.lead(getattr(exc, 'diff', None)) or exc}")
        wrong = compare.file_differs(saved)
        if wrong is not None:
            cause = explain.lead(wrong)
            raise self._failed(CheckpointMismatch(wrong, f"{header}: {cause}\n{wrong}\nand so {said}"),
                               diff=wrong, cause=cause, **self._sides) from None
        diff = getattr(exc, "diff", None)
        if diff is not None:  # pc.load_into (ours or the project's): its report is the evidence
            cause = explain.lead(diff)
            raise self._failed(CheckpointMismatch(diff, f"{header}: {cause}\n{said}"),
                               diff=diff, cause=cause, **self._sides) from None
        found = explain.explain_raised(failure, saved.path, saved.reference, config=compare.config,
                                       wrapped_by=saved.wrapped_by)
        if found is not None:
            raise self._failed(CheckpointMismatch(found.diff, f"{header}: {found.cause}\n{said}\n{found.body}"),
                               diff=found.diff, cause=found.cause, **self._sides) from None
        # an error that names no keys: the project's own, with what pytest-ckpt reads in the file
        text, cause = explain_file(saved, saved.path)
        exc.add_note(f"{header}: your load raised on {saved.path.name}\n{text}")
        _trim(exc)
        raise self._failed(exc, cause=cause, **self._sides)

    def _expect_refusal(self, job: SaveJob, saved: Saved, load: Callable | None, header: str,
                        compare: "_Compare"):
        __tracebackhide__ = True
        field, saved_count, expected_count = saved.layers
        fewer_more = "fewer" if saved.layer_delta < 0 else "more"
        blocks = changed_blocks(saved.reference, job.build())
        what = f"{field}={saved_count} saved, config says {expected_count}"
        sides = {k: self._sides[k] for k in ("saved_with", "loaded_with")}
        reloaded, exc, log = _call_load(job, load, saved.path, compare.dtype)
        if exc is not None:  # any refusal counts, if it says why
            if refuses(exc, log, blocks):
                return self._passed(f"{header}: ok: your load refused a checkpoint with one block "
                                    f"{fewer_more} ({what}) with {type(exc).__name__}, naming the blocks",
                                    reloaded=exc, **sides)
            raise self._failed(UnnamedRefusal(
                f"{header}: your load refused a checkpoint with one block {fewer_more} ({what}), "
                f"but its error does not name the blocks that differ ({', '.join(blocks) or '?'}):\n"
                f"{type(exc).__name__}: {load_error.shorten(str(exc))}"),
                cause=f"[layer-count] your load refused a checkpoint with one block {fewer_more} without "
                      "naming the blocks that differ", **sides)
        _, saved_view, reloaded_view = compare.sides(saved.reference, reloaded)
        same = api.diff(saved_view, reloaded_view, atol=compare.atol, rtol=compare.rtol)
        if same.ok:
            # it built what the checkpoint holds: right if it reads the depth from the checkpoint
            # (nanoGPT's model_args, from_pretrained), wrong if it always builds this depth
            why = self._configured_depth_fails(job, load, compare)
            if why is None:
                note = (f"your load built the {plural(saved_count, 'block')} the checkpoint holds "
                        f"({what}): it builds from the checkpoint's own config, and loads the "
                        f"{expected_count}-block checkpoint too")
                return self._passed(f"{header}: ok: {note}", note=note, reloaded=reloaded, **sides)
            cause = (f"[layer-count] your load builds {plural(saved_count, 'block')} whatever the "
                     f"checkpoint holds: it accepted one with one block {fewer_more} ({what})")
            raise self._failed(CheckpointMismatch(same, f"{header}: {cause}, and {why}"), diff=same, cause=cause,
                               **sides)
        # expected = what the load built, actual = the drifted checkpoint it accepted
        built = module_view(reloaded, label=f"the {explain.BUILT} ({type(reloaded).__name__})")
        built.expected_noun, built.built = explain.BUILT, "your load built"
        try:
            accepted = explain.file_side(saved.path, like=built, values=True)
        except Exception:  # noqa: BLE001 - a format only the project reads: the saved model says it
            accepted = saved_view
            accepted.noun = explain.SAVED
        diff = api.diff(built, accepted, atol=compare.atol, rtol=compare.rtol)
        refuse = ("load strictly (load_state_dict(strict=True), or pc.load_into) so that a "
                  "checkpoint of another depth raises")
        for i, note in enumerate(diff.notes):
            if not note.info:
                diff.notes[i] = type(note)(note.kind, note.text, refuse, note.names, note.info)
        cause = (f"[layer-count] your load accepted a checkpoint with one block {fewer_more} ({what})")
        raise self._failed(CheckpointMismatch(diff, f"{header}: {cause}; it should raise\n{diff}"), diff=diff,
                           cause=cause, **sides)

    def _configured_depth_fails(self, job: SaveJob, load: Callable | None, compare: "_Compare") -> str | None:
        """Save a model of the configured depth and load it: ``None`` when that round trip is
        exact too, else what went wrong (the load builds one depth only)."""
        path = job.directory / "as-configured" / f"model{VARIATIONS['plain'].load().suffix}"
        model = save_model(job, job.config, path, VARIATIONS["plain"].load())
        reloaded, exc, _ = _call_load(job, load, path, compare.dtype)
        if exc is not None:
            first = [line.strip() for line in load_error.shorten(str(exc)).splitlines()]
            return (f"it refused the checkpoint of the configured depth: {type(exc).__name__}: "
                    f"{' '.join(first[:2])}")
        diff = api.diff(*compare.sides(model, reloaded)[1:], atol=compare.atol, rtol=compare.rtol)
        return None if diff.ok else f"the checkpoint of the configured depth reloads differently:\n{diff}"



class _Compare:
    """How this round trip compares: tolerances, the training config, a declared cast."""

    def __init__(self, *, atol: float, rtol: float, config: Any, dtype: torch.dtype | None,
                 only: Any = None) -> None:
        self.atol, self.rtol, self.config, self.dtype, self.only = atol, rtol, config, dtype, only

    def sides(self, reference: Any, reloaded: Any) -> tuple[Any, View, View]:
        """``(reference, expected, actual)``: the saved model as the declared cast leaves it, as far
        as the reloaded model's own dtypes say the cast went (a ``.half()`` save read into a float32
        model is rounded, not float16), its view, and the reloaded model's view."""
        actual = explain.reloaded_side(reloaded)
        dtypes = {name: spec.dtype for name, spec in actual.schema.items()}
        reference = explain.cast(reference, self.dtype, like=dtypes)
        return reference, explain.saved_side(reference), actual

    def file_differs(self, saved: Saved):
        """The diff of the file against the saved model when the file is wrong (both as saved
        and after the declared cast), else ``None``: right, or unreadable to pytest-ckpt."""
        if saved.layer_delta:
            return None
        found = []
        for reference in (saved.reference, explain.cast(saved.reference, self.dtype))[:2 if self.dtype else 1]:
            result = explain.check_file(reference, saved.path, atol=self.atol, rtol=self.rtol,
                                        config=self.config, only=self.only)
            if result is None or result.ok:
                return None
            found.append(result)
        # the comparison the file comes closest to says what else the save changed (a nudge beside the cast)
        return min(found, key=lambda d: len(explain.differing(d)))


def _loaded_with(factory: Callable, load: Callable | None, has_config: bool) -> str:
    """The load, for messages: the project's, or the default ``pc.load_into`` of a fresh model."""
    if load is not None:
        return describe(load)
    return f"pc.load_into({describe(factory)}({'config' if has_config else ''}), path)"


def _call_load(job: SaveJob, load: Callable | None, path: Path, dtype: torch.dtype | None):
    """``(model, None, log)`` or ``(None, exc, log)``: the load (or pc.load_into) run once."""
    with explain.TransformersLog() as log:
        try:
            return (job.load_fresh(path, dtype=dtype) if load is None else load(path)), None, log.text
        except FactoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - every refusal is evidence
            return None, exc, log.text


def refuses(exc: BaseException, log: str, blocks: list[str]) -> bool:
    """Does a load's error refuse the checkpoint for its depth? It names the blocks that differ
    (in its text, or in transformers' loading report), or it names only tensors of another
    size (a depth that also scales the width, as VAR's does, with ``strict=False``)."""
    if names_blocks(exc, blocks):
        return True
    error = load_error.parse(str(exc), log)
    if error is None:
        return False
    if error.sizes_only:
        return True
    named = RuntimeError(" ".join(error.missing + error.unexpected))
    return names_blocks(named, blocks)


def check_arguments(factory: Any, *, config: Any, save: Any, load: Any) -> None:
    """Bad usage, said up front and naming the argument: a model instead of a factory, a
    factory that takes no config (or needs one), a save or load of the wrong shape."""
    __tracebackhide__ = True
    if isinstance(factory, nn.Module):
        raise TypeError(
            f"ckpt.roundtrip: the factory is a model instance ({type(factory).__name__}), not a "
            "function that builds one; pass the class or a function, e.g. "
            f"ckpt.roundtrip({type(factory).__name__}, config=...) (each round trip builds fresh models)")
    if not callable(factory):
        raise TypeError(f"ckpt.roundtrip: the factory must be callable, got {type(factory).__name__}")
    call = "factory(config)" if config is not None else "factory()"
    if _binds(factory, *((config,) if config is not None else ())) is False:
        if config is not None:
            raise TypeError(f"ckpt.roundtrip: config= was given, but the factory "
                            f"{describe(factory)}{signature_text(factory)} cannot be called as {call}; "
                            "drop config= or let the factory take the config")
        raise TypeError(f"ckpt.roundtrip: the factory {describe(factory)}{signature_text(factory)} "
                        "cannot be called without arguments; pass config=")
    if save is not None:
        if not callable(save):
            raise TypeError(f"ckpt.roundtrip: save= must be a function save(model, path), "
                            f"got {type(save).__name__}")
        takes = named_parameters(save) & set(SAVE_KEYWORDS)
        if _binds(save, None, None, **{k: None for k in takes}) is False:
            raise TypeError(
                f"ckpt.roundtrip: save={describe(save)}{signature_text(save)} must take (model, path) "
                f"(and may take {' and '.join(f'{k}=' for k in SAVE_KEYWORDS)})")
    if load is not None:
        if not callable(load) or _binds(load, None) is False:
            raise TypeError(f"ckpt.roundtrip: load={describe(load)}{signature_text(load)} must take "
                            "(path) and return the model")


def _binds(fn: Callable, *args, **kw) -> bool | None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # a builtin or C extension: nothing to check
    try:
        signature.bind(*args, **kw)
    except TypeError:
        return False
    return True


def _holds(view: View, dtype: torch.dtype | None) -> bool:
    return dtype is not None and any(spec.dtype == dtype for spec in view.schema.values())


def _cast_inputs(inputs: Any, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return inputs
    if isinstance(inputs, torch.Tensor):
        return inputs.to(dtype) if inputs.is_floating_point() else inputs
    if isinstance(inputs, dict):
        return {k: _cast_inputs(v, dtype) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_cast_inputs(v, dtype) for v in inputs)
    return inputs


def _outputs_fix(expected, actual, diff, atol: float, rtol: float) -> str:
    """Why outputs differ when weights do not (or differ within tolerance)."""
    if diff.ok and (atol or rtol):
        exact = api.diff(expected, actual)
        if exact.values:
            return ("the weights differ within atol/rtol, the outputs by more: the rounding "
                    "propagated through the model; give the outputs their own tolerance with "
                    "outputs_atol=/outputs_rtol=")
    return ("the outputs depend on state the checkpoint does not carry (a non-persistent buffer "
            "or a plain attribute) or on how it is loaded")


def _trim(exc: BaseException) -> None:
    try:
        setattr(exc, TRIM_ATTR, True)
    except Exception:  # noqa: BLE001 - an exception without a __dict__ keeps its frames
        pass


def explain_file(saved: Saved, path: Path) -> tuple[str, str]:
    """For a project's load error that names no keys: what pytest-ckpt finds in ``path``, one
    line per cause, for a note; and the cause that leads it (``[kind] text``, empty when the
    file holds the saved model, or pytest-ckpt cannot read it either).

    The names, shapes and dtypes in the file are compared with the saved model (values are
    not). When they match once read as pytest-ckpt reads them (found nested, wrapper prefixes
    stripped), the loader only has to read the file the same way.
    """
    try:
        expected = explain.saved_side(saved.reference)
        diff = api.diff(expected, explain.file_side(path, like=expected, values=False))
    except Exception as exc:  # noqa: BLE001 - a note must never replace the project's error
        return f"pytest-ckpt could not read it either: {type(exc).__name__}: {exc}", ""
    cause = explain.lead(diff)
    if not diff.ok:
        return f"pytest-ckpt, against the saved model: {diff}", cause
    found = (f"pytest-ckpt finds all {diff.expected_info['tensors']} tensors of the saved model "
             "in it, with their shapes and dtypes")
    how = [f"  [{n.kind}] {n.text}" for n in diff.notes if n.info]
    if not how:
        return f"{found}, read as they are: the failure is in how your load builds or reads the model", cause
    return "\n".join([
        f"{found}, when it reads the file like this:",
        *how,
        "  fix: read the file the same way in your load (pc.load_into(model, path) does)",
    ]), cause
