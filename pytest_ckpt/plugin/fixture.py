"""The ``ckpt`` fixture's object: one variation's checks within one test, each a library call.

``ckpt.roundtrip(...)`` is :func:`pytest_ckpt.check_roundtrip` and ``ckpt.resume(...)`` is
:func:`pytest_ckpt.check_resume`, run in the test's variation with the session's settings, in a
directory of the test's own. How a check ends, in the test:

- it passes: the test goes on (``roundtrip`` returns the reloaded model, ``resume`` the report);
- a mismatch (``CheckpointMismatch``, ``InterruptedMismatch``, ``ResumeMismatch``): it fails with the
  report, its first line the first cause;
- the variation cannot run here (``VariationUnavailable``, ``ResumeUnavailable``) or the run is not
  reproducible (``NotReproducible``): it is skipped with the reason, never passed or failed by chance;
- the project's own function raised: it fails with that error, the project's traceback above it.

Each check's report goes to ``user_properties`` (they survive pytest-xdist), where the collector
reads it for the summary and ``--ckpt-report``. Torch-free at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import NotReproducible, ResumeError, ResumeMismatch, ResumeUnavailable, VariationUnavailable
from ..processes.timeouts import DEFAULT_FSDP_TIMEOUT
from ..processes.world import WorldUnreachable
from .options import MARKER, MARKER_RESUME, RESUME_ID_PREFIX


class VariationChecks:
    """One variation's checks within one test; ``variation`` is its name (``"plain"``, ...)."""

    def __init__(
        self,
        variation: str,
        *,
        directory: Path,
        compile_backend: str = "eager",
        fsdp_timeout: float = DEFAULT_FSDP_TIMEOUT,
        record: Callable[[dict], None] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.variation = variation
        self._progress = progress
        self._directory = Path(directory)
        self._compile_backend = compile_backend
        self._fsdp_timeout = fsdp_timeout
        self._record = record
        self._count = 0
        self._group: Any = None

    def _open_group(self) -> None:
        """The process group of the ddp variations: opened on first use, kept until :meth:`close`."""
        from ..processes.ranks import ProcessGroupScope

        if self._group is None:
            self._group = ProcessGroupScope(self._directory)
        self._group.ensure()

    def close(self) -> None:
        """After the test: close the process group this test's checks opened (a user's is left open)."""
        if self._group is not None:
            self._group.close()

    def _next_directory(self, label: str) -> Path:
        """``<label>``, then ``<label>-2``, ...: one directory per check of the test (not created).

        >>> checks = VariationChecks("plain", directory=Path("d"))
        >>> [checks._next_directory("ckpt-plain").name for _ in range(2)]
        ['ckpt-plain', 'ckpt-plain-2']
        """
        self._count += 1
        return self._directory / (label if self._count == 1 else f"{label}-{self._count}")

    def _settings(self, label: str) -> dict[str, Any]:
        """The library call's keywords that come from the session and the test, not the project."""
        return {"variation": self.variation, "workdir": self._next_directory(label),
                "compile_backend": self._compile_backend, "fsdp_timeout": self._fsdp_timeout,
                "process_group": self._open_group}

    def _listening(self, label: str, phase: str) -> Any:
        """While a check runs: what it does, once it has taken a while, on the terminal (``label: ...``)."""
        import contextlib

        from ..report import progress

        if self._progress is None:
            return contextlib.nullcontext()
        say = self._progress
        return progress.listening(lambda line: say(f"{label}: {line}"), phase=phase)

    def _log(self, **entry: Any) -> None:
        if self._record is not None:
            self._record({"variation": self.variation, **entry})


class Ckpt(VariationChecks):
    """Under ``@pytest.mark.ckpt_roundtrip``: this variation's round trips."""

    def __repr__(self) -> str:
        return f"<ckpt variation={self.variation!r}>"

    def roundtrip(self, factory: Callable, **kw: Any) -> Any:
        """:func:`pytest_ckpt.check_roundtrip` in this test's variation (same keywords): returns the
        reloaded model (``layers-1``/``layers+1``: the exception the load raised; ``interrupted``: the
        report of every kill); fails the test with the report; skips it when the variation cannot run.

        >>> @pytest.mark.ckpt_roundtrip()                        # doctest: +SKIP
        ... def test_checkpoint(ckpt):
        ...     ckpt.roundtrip(build_model, config=Config(), load=load_for_inference)
        """
        __tracebackhide__ = True
        import pytest

        from ..checks.report import attached
        from ..checks.roundtrip import UnnamedRefusal, check_roundtrip
        from ..checks.variations.layers import LayerCountUnknown

        skip = failure = ""
        try:
            with self._listening(f"ckpt-{self.variation}", "round trip"):
                report = check_roundtrip(factory, **kw, **self._settings(f"ckpt-{self.variation}"))
        except WorldUnreachable as exc:
            _usage_error(exc)
        except VariationUnavailable as exc:
            skip = str(exc)
            self._log(outcome="skipped", reason=skip)
        except (LayerCountUnknown, UnnamedRefusal) as exc:  # said as it always was: the message alone
            self._keep(attached(exc))
            failure = str(exc)
        except BaseException as exc:
            self._keep(attached(exc))
            raise
        else:
            self._keep(report)
            return report.interrupted if report.interrupted is not None else report.reloaded
        # outside the except: the skip or failure carries no exception context
        if failure:
            pytest.fail(failure, pytrace=False)
        pytest.skip(f"ckpt-{self.variation}: {skip}")

    def _keep(self, report: Any) -> None:
        """The round trip's ``--ckpt-report`` entry (and what a pass had to say), for the collector."""
        if report is not None:
            self._log(**report.to_dict(), note=report.note)

    def resume(self, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        import pytest

        pytest.fail(f"ckpt.resume(...) runs under @pytest.mark.{MARKER_RESUME}(...), and this test is marked "
                    f"@pytest.mark.{MARKER}(...): a test carries one of the two markers; put the resume "
                    "check in a test of its own", pytrace=False)


class CkptResume(VariationChecks):
    """Under ``@pytest.mark.ckpt_resume``: this variation's resume checks."""

    def __repr__(self) -> str:
        return f"<ckpt resume variation={self.variation!r}>"

    def resume(self, start: Callable, step: Callable, *, save: Callable, load: Callable, **kw: Any):
        """Train with ``start``/``step``, stop after step ``at`` (``save``), resume (``load``), compare
        with the run that never stopped: :func:`pytest_ckpt.check_resume` in this test's variation
        (same keywords: ``steps=6, at=None, config=None, atol=0.0, rtol=0.0``).

        Returns the report; fails the test with it on a mismatch; skips when the run is not
        reproducible or the variation cannot run here.

        >>> @pytest.mark.ckpt_resume()                           # doctest: +SKIP
        ... def test_resume(ckpt):
        ...     ckpt.resume(start, step, save=save, load=load, config=Config())
        """
        __tracebackhide__ = True
        from ..checks.resume import check_resume

        return self._checked(lambda settings: check_resume(start, step, save=save, load=load, **kw, **settings))

    def resume_hf(self, make_trainer: Callable, **kw: Any):
        """:func:`pytest_ckpt.check_resume_hf` in this test's variation (same keywords: ``at``, ``atol``,
        ``rtol``): a ``transformers.Trainer`` resumed from its own ``checkpoint-<at>``. ``plain`` and
        ``fresh-process`` run; the variations the Trainer runs itself are skipped saying how.

        >>> @pytest.mark.ckpt_resume("plain", "fresh-process")   # doctest: +SKIP
        ... def test_trainer_resumes(ckpt):
        ...     ckpt.resume_hf(make_trainer, at=3)
        """
        __tracebackhide__ = True
        from ..checks.trainers.hf import check_resume_hf

        return self._checked(lambda settings: check_resume_hf(make_trainer, **kw, **_trainer(settings)))

    def resume_lightning(self, make_module: Callable, make_trainer: Callable, make_data: Callable, **kw: Any):
        """:func:`pytest_ckpt.check_resume_lightning` in this test's variation, as :meth:`resume_hf`.

        >>> @pytest.mark.ckpt_resume("plain", "fresh-process")   # doctest: +SKIP
        ... def test_fit_resumes(ckpt):
        ...     ckpt.resume_lightning(LitNet, make_trainer, make_loader, at=4)
        """
        __tracebackhide__ = True
        from ..checks.trainers.lightning import check_resume_lightning

        return self._checked(lambda settings: check_resume_lightning(make_module, make_trainer, make_data, **kw,
                                                                     **_trainer(settings)))

    def _checked(self, check: Callable[[dict], Any]) -> Any:
        """``check(settings)``, its report logged; a mismatch fails the test with the report, a run that
        cannot run here or is not reproducible skips it."""
        __tracebackhide__ = True
        import pytest

        from ..report.run import as_dict

        label = f"{RESUME_ID_PREFIX}{self.variation}"
        try:
            with self._listening(label, "resume check"):
                report = check(self._settings(label))
        except WorldUnreachable as exc:
            _usage_error(exc)
        except (ResumeUnavailable, VariationUnavailable, NotReproducible) as exc:
            skip = str(exc)
            self._log(outcome="skipped", reason=skip)
        except ResumeMismatch as exc:
            cause = first_cause(exc.report)
            self._log(outcome="failed", cause=cause, report=as_dict(exc.report))
            failure = ResumeMismatch(exc.report)
            failure.args = (f"{label}: {cause}\n{exc.report}",)
            raise failure from None
        except ResumeError as exc:  # the project's function raised; "[prefix] ...": what it expected instead
            said = str(exc)
            self._log(outcome="failed", **({"cause": said.splitlines()[0]} if said.startswith("[") else {}))
            raise
        except Exception:
            self._log(outcome="failed")  # the failure's own first line says what (the project's error)
            raise
        else:
            self._log(outcome="passed", report=as_dict(report))
            return report
        pytest.skip(f"{label}: {skip}")  # outside the except: the skip carries no exception context

    def roundtrip(self, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        import pytest

        pytest.fail(f"ckpt.roundtrip(...) runs under @pytest.mark.{MARKER}(...), and this test is marked "
                    f"@pytest.mark.{MARKER_RESUME}(...): a test carries one of the two markers; put the round "
                    "trip in a test of its own", pytrace=False)


def _trainer(settings: dict[str, Any]) -> dict[str, Any]:
    """The session's settings a trainer check takes: its variation and its directory (the framework
    compiles, wraps and launches itself)."""
    return {"variation": settings["variation"], "workdir": settings["workdir"]}


def _usage_error(exc: BaseException) -> None:
    """The environment says there is a torchrun world that is not there: stop the session, saying so
    (every later check of the world would fail the same way)."""
    import pytest

    pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)


def first_cause(report: Any) -> str:
    """``[kind] text`` of the report's first cause, on one line; the verdict when it names none.

    >>> from types import SimpleNamespace as NS
    >>> first_cause(NS(notes=[NS(kind="resume-counter", text="run.step is 0 after load\\n(uninterrupted: 3)")]))
    '[resume-counter] run.step is 0 after load (uninterrupted: 3)'
    """
    notes = list(report.notes)
    if notes:
        return f"[{notes[0].kind}] {' '.join(str(notes[0].text).split())}"
    return str(report).splitlines()[0]
