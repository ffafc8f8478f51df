"""``ResumeReport``: what a resume check found, as data; ``str()`` renders it, ``to_dict()`` is JSON-ready."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..checkpoint.notes import Note
from ..formats.jsonable import jsonable
from ..report.resume import render


@dataclass
class ResumePoint:
    """One resume point: saved after step ``at``, resumed, compared.

    ``divergence``: the first resumed step that differs, as ``{"step", "what", "expected", "actual"}``
    (``what``: ``"loss"``, ``"batch"``, or the path of the component that differs; ``expected`` is the
    uninterrupted run's loss). ``resumed_losses`` covers every step: the interrupted run's before the
    save, the resumed run's after.
    """

    at: int
    resumed_losses: list[float]
    divergence: dict | None = None
    notes: list[Note] = field(default_factory=list)
    #: components whose state differed right after load
    differs_after_load: list[str] = field(default_factory=list)
    #: differences that are no cause by the evidence (bookkeeping while every batch matches): path -> why
    set_aside: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.divergence is None and not self.notes

    @property
    def first_divergent_step(self) -> int | None:
        return None if self.divergence is None else self.divergence["step"]

    def to_dict(self) -> dict:
        return {"at": self.at, "ok": self.ok, "first_divergent_step": self.first_divergent_step,
                "divergence": jsonable(self.divergence), "resumed_losses": _floats(self.resumed_losses),
                "differs_after_load": list(self.differs_after_load),
                "notes": [n.to_dict() for n in self.notes]}


@dataclass
class ResumeReport:
    """The resume check's result. Verdict first in ``str()``, then one line per cause with its fix.

    With several resume points, ``resumed_losses``, ``first_divergent_step`` and ``notes`` are those
    of the first point that failed (of the first point when all pass); ``points`` holds each.

    >>> r = ResumeReport(steps=4, at=2, losses=[1.0, 0.9, 0.8, 0.7],
    ...                  points=[ResumePoint(2, [1.0, 0.9, 0.8, 0.7])], compared={"run.model": "module"})
    >>> r.ok, r.first_divergent_step
    (True, None)
    >>> print(r)
    ok: resume after step 2 matches the uninterrupted run (4 steps, losses bitwise, 1 component compared)
    """

    steps: int
    at: int | tuple[int, ...]
    losses: list[float]
    points: list[ResumePoint]
    #: path -> kind of every component compared
    compared: dict[str, str] = field(default_factory=dict)
    #: what could not be checked -> why
    not_compared: dict[str, str] = field(default_factory=dict)
    atol: float = 0.0
    rtol: float = 0.0
    #: seconds spent: "uninterrupted", "reproducible", "interrupted", "total"
    seconds: dict[str, float] = field(default_factory=dict)
    #: whether the final state was compared too (not after a resume on another world size)
    final_compared: bool = True

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.points)

    @property
    def point(self) -> ResumePoint:
        """The point the top-level fields describe: the first that failed, else the first."""
        return next((p for p in self.points if not p.ok), self.points[0])

    @property
    def resumed_losses(self) -> list[float]:
        return self.point.resumed_losses

    @property
    def first_divergent_step(self) -> int | None:
        return self.point.first_divergent_step

    @property
    def notes(self) -> list[Note]:
        return self.point.notes

    def to_dict(self) -> dict:
        """JSON-ready (``json.dumps(report.to_dict(), allow_nan=False)``): non-finite losses as strings."""
        return {
            "ok": self.ok, "steps": self.steps,
            "at": list(self.at) if isinstance(self.at, tuple) else self.at,
            "losses": _floats(self.losses), "resumed_losses": _floats(self.resumed_losses),
            "first_divergent_step": self.first_divergent_step,
            "compared": dict(self.compared), "not_compared": dict(self.not_compared),
            "notes": [n.to_dict() for n in self.notes],
            "points": [p.to_dict() for p in self.points],
            "atol": self.atol, "rtol": self.rtol,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }

    def __str__(self) -> str:
        return render(self)


def _floats(values) -> list:
    return [jsonable(v) for v in values]
