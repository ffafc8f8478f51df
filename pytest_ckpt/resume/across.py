"""Resume on another world size: what the ranks of each run left, gathered, and one report.

The uninterrupted run (which saves after step ``at`` and goes on: its first ``at`` steps are the
interrupted run) runs on one world size, the resumed half on another. Each hands over a
:class:`RanksTrace`: the global loss of every step, the samples each rank trained on, and the
state gathered to full tensors (weights and optimizer state by parameter name) right after step
``at`` (after load, for the resumed run) and at the end.

The state right after load is compared bitwise; the continuation (the later losses) within a
tolerance, because the gradient reduction order changes with the world size; and the samples of
the remaining steps must be the uninterrupted run's global batches, each exactly once across the
ranks (:mod:`.coverage`). The final state is not compared: Adam turns a gradient that is rounding
noise (GPT-2's attention key bias, whose true gradient is 0) into an update as large as the learning
rate, whose sign follows the reduction order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .compare import compare_states, first_divergence
from .coverage import coverage
from .report import ResumePoint, ResumeReport
from .rules import Findings, explain

#: the continuation's tolerance when the check is given none (float32 sums in another order)
ATOL = 1e-5
RTOL = 1e-4


@dataclass
class RanksTrace:
    """What one run on ``world_size`` ranks left (rank 0 gathers it). Steps counted from 1.

    ``losses[i]``: the global loss of the i-th step the run took (each rank's loss weighted by its
    samples); ``samples[i][r]``: the samples rank ``r`` trained on then (:func:`.coverage.samples`);
    ``snapshots``: step -> path -> gathered state (after step ``at``, or right after load).
    """

    world_size: int
    losses: list[float] = field(default_factory=list)
    samples: list[list[list[str]]] = field(default_factory=list)
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)
    trained: frozenset[str] = frozenset()


def global_loss(losses: list[float], counts: list[int]) -> float:
    """The ranks' losses as one: each weighted by its samples (a mean loss over the global batch).

    >>> global_loss([1.0, 4.0], [3, 1]), global_loss([1.0, 2.0], [0, 0])
    (1.75, 1.5)
    """
    if sum(counts) == 0:
        return sum(losses) / len(losses)
    return sum(loss * n for loss, n in zip(losses, counts)) / sum(counts)


def tolerance(atol: float, rtol: float) -> tuple[float, float]:
    """The continuation's tolerance: the check's when it gives one, else :data:`ATOL`, :data:`RTOL`."""
    return (atol, rtol) if atol or rtol else (ATOL, RTOL)


def judge(ref: RanksTrace, resumed: RanksTrace, at: int, steps: int, *, atol: float, rtol: float) -> ResumeReport:
    """One report: the restore-time state bitwise, the later losses within ``atol``/``rtol``, the samples."""
    kinds = dict(ref.kinds)
    after_load = compare_states(ref.snapshots[at], resumed.snapshots[at], kinds, list(kinds))
    losses = ref.losses[:at] + resumed.losses
    none = [None] * steps
    first = first_divergence(ref.losses, losses, none, none, at, atol=atol, rtol=rtol)
    followed = any(rank for ranks in ref.samples for rank in ranks)
    missed = coverage(ref.samples, resumed.samples, at) if followed else []
    divergence = None
    if first is not None:
        step, what = first
        divergence = {"step": step, "what": what, "expected": ref.losses[step - 1], "actual": losses[step - 1]}
    notes = []
    if divergence is not None or after_load or missed:
        findings = Findings(at=at, steps=steps, restore=after_load,
                            divergence=(divergence["step"], divergence["what"]) if divergence else None,
                            compared=kinds, classes=ref.classes, trained=ref.trained, coverage=missed,
                            ranks=(ref.world_size, resumed.world_size))
        notes = explain(findings)
    point = ResumePoint(at, losses, divergence, notes, [d.path for d in after_load])
    saved, loaded = ref.world_size, resumed.world_size
    not_compared = {
        "the continuation bitwise": (
            f"saved on {saved} ranks, resumed on {loaded}: the gradient reduction order changes with the world "
            f"size, so the later losses are compared within atol={atol:g}, rtol={rtol:g}, and the state right "
            f"after load bitwise, gathered to full tensors by parameter name"),
        "the final state": ("Adam turns a gradient that is rounding noise (an attention key bias) into an update "
                            "as large as the learning rate, whose sign follows the reduction order"),
        "the rest of the run": (
            "scheduler, counters and random streams are per-rank state, compared by the fsdp variation "
            f"({saved} ranks to {saved}); here the gathered weights, optimizer state and the samples"),
    }
    if not followed:
        not_compared["data position"] = ("step returns no batch with rows: return (loss, batch) to check that "
                                         "the ranks cover each sample exactly once")
    return ResumeReport(steps=steps, at=at, losses=list(ref.losses), points=[point], compared=kinds,
                        not_compared=not_compared, atol=atol, rtol=rtol, final_compared=False)
