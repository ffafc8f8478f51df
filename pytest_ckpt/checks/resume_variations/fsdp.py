"""``fsdp``: FSDP2 ``fully_shard`` on 2 real processes; each rank runs the project's functions; compared per rank.

Each rank runs :func:`pytest_ckpt.check_resume` on the project's own ``start``, ``step``, ``save``
and ``load``, sharding every top-level module the run's optimizers train (its ``nn.ModuleList``
blocks, then the module: the usual FSDP2 recipe) once the run is built: right after ``start``, or
after ``load`` returns for the resumed run (``load`` meets the bare modules, as a project that
restores before it shards: API §4.1). The optimizers follow the sharded parameters, with the state
``load`` gave them sharded alike. ``ignore=`` is carried to every rank.
Both ranks save to and load from the same path (a ``torch.distributed.checkpoint`` directory, or
whatever the project's save writes there); each compares its own shards of weights and optimizer
state, its own scheduler, counters and random streams.

The functions must be importable module-level functions and ``config`` picklable (the ranks are
new processes); a model FSDP2 cannot shard, or a rank that cannot rebuild the functions, skips the
test with the reason. A rank whose check fails fails the test with that rank's report; the ranks
must take the same steps, so a failure that only one rank sees can leave the other waiting in a
collective until ``ckpt_fsdp_timeout``.

The ranks are this module run as ``python -m pytest_ckpt.checks.resume_variations.fsdp JOB RANK``
(started and killed by :func:`pytest_ckpt.processes.ranks.run_ranks`).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ...errors import NotReproducible, ResumeError, ResumeMismatch, ResumeUnavailable
from ...processes import children
from .base import ResumeJob, ResumeSide

ROLES = ("start", "step", "save", "load")


@dataclass
class RankJob:
    """What each rank needs; pickled by :func:`run_ranks` after ``sys.path``."""

    functions: dict[str, tuple[str, str]]
    config_blob: bytes | None
    steps: int
    at: int | tuple[int, ...] | None
    atol: float
    rtol: float
    #: the check's work directory, shared by the ranks: the checkpoint paths are the same on both
    checkpoints: str
    #: ``check_resume``'s ``ignore=``: what the project re-derives on purpose, left out on every rank
    ignore: tuple[str, ...] = ()


class Fsdp(ResumeSide):
    def check(self, job: ResumeJob):
        __tracebackhide__ = True
        from ...processes.ranks import FSDP_WORLD_SIZE

        _check_available()
        functions, config_blob = rank_inputs(job)
        refuse_unshardable(job)
        from ...processes import world
        from ...resume.check import ignore_paths

        # under torchrun every rank of the launched world is one of the ranks: rank 0's directory
        workdir = world.shared(job.workdir) if world.launched() else job.workdir
        world_size = world.size() if world.launched() else FSDP_WORLD_SIZE
        ranks = workdir / "ranks"
        rank_job = RankJob(functions, config_blob, job.steps, job.at, job.atol, job.rtol,
                           str(workdir / "checkpoints"), ignore_paths(job.options.get("ignore", ())))
        return judge(run_and_collect(__name__, rank_job, ranks, world_size, timeout=job.fsdp_timeout))


def rank_inputs(job: ResumeJob) -> tuple[dict[str, tuple[str, str]], bytes | None]:
    """The project's functions by importable name and its config pickled, for the ranks; else
    :class:`ResumeUnavailable` saying why."""
    functions = {}
    for role in ROLES:
        try:
            functions[role] = children.importable(getattr(job, role), role)
        except children.NotImportable as exc:
            raise ResumeUnavailable(f"the ranks cannot import the project's functions: {exc}") from None
    try:
        config_blob = None if job.config is None else children.pickled(job.config, "config")
    except children.NotPicklable as exc:
        raise ResumeUnavailable(f"the ranks cannot receive the project's config: {exc}") from None
    return functions, config_blob


def refuse_unshardable(job: ResumeJob) -> None:
    """``VariationUnavailable`` when FSDP2 would refuse a module the run trains (a scalar parameter),
    decided from one ``start`` here, before any rank starts (that costs a torch import per rank). A
    ``start`` that cannot run outside the ranks leaves the decision to them."""
    from ...errors import VariationUnavailable
    from ...processes.ranks import shard_refusal
    from ...resume import streams
    from ...resume.state import available_streams, run_state

    caller = streams.save(available_streams())  # the caller's random state stays as it was
    try:
        run = job.start() if job.config is None else job.start(job.config)
        trained = run_state(run, streams=()).trained_modules()
    except Exception:  # noqa: BLE001 - it needs the ranks (their group): they decide
        return
    finally:
        streams.restore(caller)
    for c in trained:
        refused = shard_refusal(c.obj)
        if refused:
            raise VariationUnavailable(f"FSDP2 cannot shard {c.path} ({type(c.obj).__name__}): {refused}")


def run_and_collect(module: str, rank_job: Any, ranks: Path, world_size: int, *, timeout: float,
                    label: str = "fsdp") -> list[tuple[str, Any]]:
    """``run_ranks`` on ``world_size`` ranks, then each rank's ``(kind, payload)`` result; a rank whose
    project code raised is a :class:`ResumeError` naming it."""
    from ...processes.ranks import run_ranks

    try:
        run_ranks(module, rank_job, ranks, timeout=timeout, world_size=world_size, label=label)
    except RuntimeError:
        # a rank whose project code raised stops the other: its error is the news, not the tails
        for rank, (kind, payload) in _first_cause(_results(ranks, world_size)):
            if kind == "error":
                raise ResumeError(f"rank {rank} of {world_size}: {payload} (the ranks' output: "
                                  f"{ranks}/rank*.log)") from None
        raise
    return _results(ranks, world_size)


def _first_cause(results: list[tuple[str, Any]]) -> list[tuple[int, tuple[str, Any]]]:
    """The ranks' results in rank order, those that only waited in a collective for a rank that had
    failed last: that rank's error is the cause."""
    from ...processes.ranks import waited

    ranked = list(enumerate(results))
    return sorted(ranked, key=lambda r: r[1][0] == "error" and waited(str(r[1][1])))


def _results(ranks: Path, world_size: int) -> list[tuple[str, Any]]:
    from ...formats import own

    out = []
    for rank in range(world_size):
        path = ranks / f"result-{rank}.pkl"
        out.append(own.unpickled(path.read_bytes()) if path.exists() else ("missing", None))
    return out


def judge(results: list[tuple[str, Any]]):
    """One verdict from the ranks' results (``(kind, payload)`` each, rank order): the first rank whose
    check failed fails it (its report names the rank), else the first that could not judge skips it,
    else rank 0's report."""
    __tracebackhide__ = True
    for rank, (kind, payload) in _first_cause(results):
        if kind in ("error", "missing"):
            raise ResumeError(f"rank {rank} of {len(results)}: {payload or 'no result'}")
    for rank, (kind, payload) in enumerate(results):
        if kind == "mismatch":
            payload.not_compared = {**payload.not_compared,
                                    "other ranks": f"this is rank {rank}'s report (of {len(results)}); each rank "
                                                   "compares its own shards"}
            raise ResumeMismatch(payload)
    for rank, (kind, payload) in enumerate(results):
        if kind == "not-reproducible":
            step, component, detail = payload
            raise NotReproducible(step, f"{component} (rank {rank})", detail)
        if kind == "unavailable":
            raise ResumeUnavailable(f"rank {rank}: {payload}")
    return results[0][1]


def _check_available() -> None:
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        raise ResumeUnavailable("torch.distributed with gloo is not available in this torch build")
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        raise ResumeUnavailable(f"FSDP2 fully_shard is not available in torch {torch.__version__}") from None


# -- on each rank ---------------------------------------------------------------------------------

class ShardRefused(Exception):
    """FSDP2 refused to shard one of the run's modules: the variation cannot run on this model."""


def sharder(mesh: Any) -> Callable:
    """``module -> module`` sharded in place with ``fully_shard`` (its ``nn.ModuleList`` blocks, then the
    module: the usual FSDP2 recipe), for ``check_resume``'s ``wrap=``: it runs once the run is built,
    after ``start`` or after ``load`` returns, and the run's optimizers follow the sharded parameters."""
    def fully_shard(module: Any) -> Any:
        from ...processes.ranks import SHARD_REFUSALS, shard

        try:
            shard(module, mesh)
        except SHARD_REFUSALS as exc:
            raise ShardRefused(f"FSDP2 cannot shard {type(module).__name__}: {exc}") from None
        return module

    return fully_shard


def _rank_main(job_path: str, rank: int) -> int:
    from ...resume.check import check_resume
    from ...processes.ranks import EXIT_UNAVAILABLE, FSDP_WORLD_SIZE

    workdir = Path(job_path).parent
    entered = enter(job_path, rank, FSDP_WORLD_SIZE)
    if entered is None:
        return EXIT_UNAVAILABLE
    job, fns, config, mesh, owned = entered
    try:
        report = check_resume(fns["start"], fns["step"], save=fns["save"], load=fns["load"], steps=job.steps,
                              at=job.at, config=config, atol=job.atol, rtol=job.rtol, ignore=job.ignore,
                              workdir=job.checkpoints, wrap=sharder(mesh))
        result: tuple[str, Any] = ("ok", report)
    except ResumeMismatch as exc:
        result = ("mismatch", exc.report)
    except NotReproducible as exc:
        result = ("not-reproducible", (exc.step, exc.component, exc.detail))
    except ResumeUnavailable as exc:
        result = ("unavailable", str(exc))
    except BaseException as exc:  # noqa: BLE001 - the parent raises it, naming the rank
        return failed(exc, workdir, rank, owned)
    return hand_over(workdir, rank, result, owned)


def enter(job_path: str, rank: int,
          world_size: int | None = None) -> tuple[Any, dict[str, Callable], Any, Any, bool] | None:
    """In a rank: the job, the project's functions by role, its config, the device mesh of the ranks'
    group (joined: ``world_size`` ranks, the job's own by default) and whether this rank opened the
    group; ``None`` when this rank cannot rebuild the functions (the reason is in ``skip.txt``)."""
    from ...processes.ranks import join, mesh, read_rank_job

    def rebuild(job: Any):
        return (job, {role: children.import_object(*name) for role, name in job.functions.items()},
                children.unpickled(job.config_blob))

    rebuilt = read_rank_job(job_path, rebuild, "the project's functions or config")
    if rebuilt is None:
        return None
    job, fns, config = rebuilt

    size, owned = join(Path(job_path).parent, rank, world_size or job.world_size)
    return job, fns, config, mesh(size), owned


def failed(exc: BaseException, workdir: Path, rank: int, owned: bool) -> int:
    """In a rank whose work raised ``exc``: FSDP2 refusing the model (raised by ``start``, so it comes
    wrapped in the ResumeError naming it) is "cannot run here", its reason in ``skip.txt``, the group
    left (every rank refuses the same model: none waits on another, and the worker stays for the next
    job); anything else is this rank's error, handed over for the parent to raise."""
    from ...processes.ranks import EXIT_UNAVAILABLE, leave, rank_failed

    reason = exc if isinstance(exc, ShardRefused) else exc.__cause__
    if isinstance(reason, ShardRefused):
        (workdir / "skip.txt").write_text(str(reason))
        leave(owned)
        return EXIT_UNAVAILABLE
    rank_failed(workdir, rank, exc)
    return hand_over(workdir, rank, ("error", f"{type(exc).__name__}: {exc}"), owned)


def hand_over(workdir: Path, rank: int, result: tuple[str, Any], owned: bool) -> int:
    """In a rank: write its ``(kind, payload)`` result for the parent, and leave the group unless it failed."""
    from ...processes.ranks import leave

    (workdir / f"result-{rank}.tmp").write_bytes(pickle.dumps(result))
    os.replace(workdir / f"result-{rank}.tmp", workdir / f"result-{rank}.pkl")
    (workdir / f"done-{rank}").touch()
    if result[0] == "error":
        return 1  # another rank may be stuck in a collective: no teardown, and the launcher stops waiting
    leave(owned)
    return 0


FSDP = Fsdp()


if __name__ == "__main__":
    from ...processes.ranks import rank_entry

    rank_entry(_rank_main)
