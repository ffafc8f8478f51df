"""The ``ckpt`` fixture's resume check, under ``@pytest.mark.ckpt_resume``.

>>> @pytest.mark.ckpt_resume()                                      # doctest: +SKIP
... def test_training_resumes_exactly(ckpt):
...     ckpt.resume(start, step, save=save, load=load, config=Config())

``ckpt.resume`` is :func:`pytest_ckpt.check_resume` run in this test's variation
(:mod:`pytest_ckpt.checks.resume_variations`). How a check ends, in the test:

- the resumed run is the run that never stopped: it passes, and returns the ``ResumeReport``;
- ``ResumeMismatch``: it fails; the failure's first line is the first cause (``[resume-<kind>] ...``),
  the report follows (verdict, one line per cause with its fix, what was compared);
- ``NotReproducible`` (the uninterrupted run disagrees with itself) or a variation that cannot run
  here (``ResumeUnavailable``): it is skipped with the reason, never passed or failed by chance;
- the project's own function raised (``ResumeError``, naming it): it fails with that error, the
  project's traceback above it.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import NotReproducible, ResumeMismatch, ResumeUnavailable
from ..resume.report import ResumeReport
from .checks import VariationChecks, as_dict
from .options import MARKER, MARKER_RESUME, RESUME_ID_PREFIX
from ..checks.resume_variations import RESUME_VARIATIONS
from ..checks.resume_variations.base import ResumeJob
from ..checks.variations import VariationUnavailable


class CkptResume(VariationChecks):
    """One variation's resume checks within one test; ``variation`` is its name (``"plain"``, ...)."""

    def __repr__(self) -> str:
        return f"<ckpt resume variation={self.variation!r}>"

    def resume(
        self,
        start: Callable,
        step: Callable,
        *,
        save: Callable,
        load: Callable,
        steps: int = 6,
        at: int | tuple[int, ...] | None = None,
        config: Any = None,
        atol: float = 0.0,
        rtol: float = 0.0,
    ) -> ResumeReport:
        """Train with ``start``/``step``, stop after step ``at`` (``save``), resume (``load``), compare
        with the run that never stopped: :func:`pytest_ckpt.check_resume` in this test's variation.

        Returns the report; fails the test with it on a mismatch; skips when the run is not
        reproducible or the variation cannot run here.
        """
        __tracebackhide__ = True
        import pytest

        label = f"{RESUME_ID_PREFIX}{self.variation}"
        job = ResumeJob(
            variation=self.variation, start=start, step=step, save=save, load=load, steps=steps, at=at,
            config=config, atol=atol, rtol=rtol, workdir=self._next_directory(label),
            compile_backend=self._compile_backend, process_group=self._process_group,
            fsdp_timeout=self._fsdp_timeout,
        )
        impl = RESUME_VARIATIONS[self.variation].load()
        try:
            report = impl.check(job)
        except (ResumeUnavailable, VariationUnavailable, NotReproducible) as exc:
            reason = str(exc)
            self._log(outcome="skipped", reason=reason)
        except ResumeMismatch as exc:
            cause = first_cause(exc.report)
            self._log(outcome="failed", cause=cause, report=as_dict(exc.report))
            failure = ResumeMismatch(exc.report)
            failure.args = (f"{label}: {cause}\n{exc.report}",)
            raise failure from None
        except Exception:
            self._log(outcome="failed")  # the failure's own first line says what (the project's error)
            raise
        else:
            self._log(outcome="passed", report=as_dict(report))
            return report
        pytest.skip(f"{label}: {reason}")  # outside the except: the skip carries no exception context

    def roundtrip(self, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        import pytest

        pytest.fail(f"ckpt.roundtrip(...) runs under @pytest.mark.{MARKER}(...), and this test is marked "
                    f"@pytest.mark.{MARKER_RESUME}(...): a test carries one of the two markers; put the round "
                    "trip in a test of its own", pytrace=False)



def first_cause(report: ResumeReport) -> str:
    """``[kind] text`` of the report's first cause, on one line; the verdict when it names none.

    >>> from types import SimpleNamespace as NS
    >>> first_cause(NS(notes=[NS(kind="resume-counter", text="run.step is 0 after load\\n(uninterrupted: 3)")]))
    '[resume-counter] run.step is 0 after load (uninterrupted: 3)'
    """
    notes = list(report.notes)
    if notes:
        return f"[{notes[0].kind}] {' '.join(str(notes[0].text).split())}"
    return str(report).splitlines()[0]
