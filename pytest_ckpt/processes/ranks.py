"""Process groups for the variations: one in-process gloo group, and ranks in fresh processes
(the round trip's two-process FSDP2 save; the resume check's two FSDP2 ranks).

Rendezvous always goes through a ``file://`` in the test's temporary directory,
so parallel pytest-xdist workers never share a port or a store.

The ranks run on this process's rank workers (:mod:`.pool`), started once and reused; a job that
fails or times out has its workers killed before the launcher returns, and no worker outlives the
pytest process.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from ..errors import VariationUnavailable
from ..report import progress
from . import children
from . import pool, world
from .timeouts import DEFAULT_FSDP_TIMEOUT, ENV_FSDP_TIMEOUT, INI_FSDP_TIMEOUT

#: seconds the two FSDP ranks may take, start-up included, when the caller gives none
FSDP_TIMEOUT_S = DEFAULT_FSDP_TIMEOUT
FSDP_WORLD_SIZE = 2
#: worker exit status meaning "cannot run here": its reason is in ``skip.txt``
EXIT_UNAVAILABLE = 3


class ProcessGroupScope:
    """Opens a world-size-1 gloo group on first :meth:`ensure`, closes it in :meth:`close`.

    A group the user already opened is reused and left open.
    """

    def __init__(self, rendezvous_dir: Path) -> None:
        self.rendezvous_dir = Path(rendezvous_dir)
        self.owned = False

    def ensure(self) -> None:
        import torch.distributed as dist

        if not dist.is_available():
            raise VariationUnavailable("torch.distributed is not available in this torch build")
        if world.launched():  # under torchrun: DDP runs on the launched world
            world.ensure()
        if dist.is_initialized():
            return
        self.rendezvous_dir.mkdir(parents=True, exist_ok=True)
        dist.init_process_group("gloo", store=file_store(self.rendezvous_dir / "pg-rendezvous", 1), rank=0,
                                world_size=1)
        self.owned = True

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            self.owned = False
            if dist.is_initialized():
                dist.destroy_process_group()

    def __enter__(self) -> "ProcessGroupScope":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def importable(obj: Any, what: str) -> tuple[str, str]:
    """``(module, qualname)`` that the rank processes can import, or ``VariationUnavailable``."""
    try:
        return children.importable(obj, what)
    except children.NotImportable as exc:
        raise VariationUnavailable(str(exc)) from None


def pickled(obj: Any, what: str) -> bytes:
    """``obj`` pickled for the rank processes, or ``VariationUnavailable``."""
    try:
        return children.pickled(obj, what)
    except children.NotPicklable as exc:
        raise VariationUnavailable(str(exc)) from None


def read_rank_job(job_path: str, rebuild: Callable[[Any], Any], what: str) -> Any:
    """In a rank: the job it was started with, ``rebuild(job)`` (the project's objects imported back);
    ``None`` after writing ``skip.txt`` (``what`` cannot be rebuilt here) when that fails.

    The file holds ``sys.path`` first, so the rest can unpickle."""
    from ..formats import own

    job = own.pickles(job_path)
    sys.path[:0] = [p for p in next(job) if p not in sys.path]
    try:
        return rebuild(next(job))
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot run here"
        (Path(job_path).parent / "skip.txt").write_text(
            f"{what} cannot be rebuilt in a rank process: {type(exc).__name__}: {exc}")
        return None


#: what a collective that another rank never joined raises (gloo, NCCL): a rank left waiting
WAITING = ("Timed out waiting", "Connection closed by peer", "Connection reset by peer",
           "Watchdog caught collective operation timeout", "communicator was aborted")


def waited(error: str) -> bool:
    """Whether a rank's error is a collective another rank never joined (not that rank's own cause)."""
    return any(marker in error for marker in WAITING)


def rank_failed(workdir: Path, rank: int, exc: BaseException) -> int:
    """In a rank whose work raised ``exc``: its traceback to the rank's output, its one-line error to
    ``workdir/error-RANK.txt`` (the launched world names it); exit status 1. No teardown: the other
    ranks may wait in a collective; the launcher stops them."""
    traceback.print_exc()
    (workdir / f"error-{rank}.txt").write_text(f"{type(exc).__name__}: {exc}"[:2000])
    return 1


def rank_entry(main: Callable[[str, int], int]) -> None:
    """A rank module's ``__main__``: ``main(job_path, rank)``, then exit without interpreter teardown
    (gloo's threads can abort it after the work is done)."""
    code = main(sys.argv[1], int(sys.argv[2]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_ranks(module: str, job: Any, workdir: Path, *, timeout: float = FSDP_TIMEOUT_S,
              world_size: int | None = None, function: str = "_rank_main", label: str = "fsdp",
              fresh: bool = False) -> None:
    """Run ``MODULE.function(JOB_PATH, RANK)`` on ``world_size`` rank workers and wait for all.

    The workers are this process's :mod:`.pool` (started once, reused by later calls). ``job`` is
    pickled to ``workdir/job.pkl`` after this process's ``sys.path`` (read that first, so the rest
    can unpickle). A rank that finished its work touches ``workdir/done-RANK``; one that cannot run
    here returns :data:`EXIT_UNAVAILABLE` with its reason in ``workdir/skip.txt``. Raises
    ``VariationUnavailable`` for the latter, ``RuntimeError`` with the ranks' output when one fails
    or time runs out (its message starts with ``label``). Workers of a job that did not succeed on
    every rank are killed before this returns (one may be stuck in a collective): they never outlive
    the call that failed. ``fresh``: workers started for this job alone and closed after it, never
    the launched world's ranks (a job that installs hooks or forks: ``interrupted``'s child).

    Under torchrun the ranks are the launched world's first ``world_size`` (all of them for
    ``world_size=None``; ``VariationUnavailable`` when the world has fewer), ``workdir`` the same on
    every rank (:func:`world.shared`); spawned, ``None`` means :data:`FSDP_WORLD_SIZE`.
    """
    if world.launched() and not fresh:
        return _run_in_world(module, function, job, workdir, label,
                             world.size() if world_size is None else world_size, timeout)
    world_size = FSDP_WORLD_SIZE if world_size is None else world_size
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("error-*.txt"):  # an earlier job's: never this one's cause
        stale.unlink()
    job_path = workdir / "job.pkl"
    with open(job_path, "wb") as f:
        pickle.dump(list(sys.path), f)
        pickle.dump(job, f)
    logs = [workdir / f"rank{rank}.log" for rank in range(world_size)]
    results = [workdir / f"exit-{rank}" for rank in range(world_size)]
    ranks = pool.RankPool(reuse=False) if fresh else pool.shared()
    workers = ranks.take(world_size)
    codes: list[int | None] = [None] * world_size
    try:
        env, cwd = pool.rank_env(), os.getcwd()
        for rank, worker in enumerate(workers):
            worker.send({"target": f"{module}:{function}", "job": str(job_path), "rank": rank,
                         "log": str(logs[rank]), "result": str(results[rank]), "cwd": cwd, "env": env})
        deadline = time.monotonic() + timeout
        progress.doing(f"{label} on {world_size} rank process{'' if world_size == 1 else 'es'}")
        while True:
            codes = [_code(results[r], w) for r, w in enumerate(workers)]  # every rank: not any()
            if all(c is not None for c in codes):
                break
            # a rank that died leaves the other blocked in a collective: stop waiting
            if any(c not in (None, 0) for c in codes):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{label}: the {world_size} rank{'' if world_size == 1 else 's'} did not finish "
                    f"within {timeout:g}s "
                    f"(raise ini {INI_FSDP_TIMEOUT} or env {ENV_FSDP_TIMEOUT})\n"
                    + _tails(logs, workers)
                )
            progress.tick()
            time.sleep(0.02)
        if any(c == EXIT_UNAVAILABLE for c in codes):
            raise _unavailable(workdir)
        done = all((workdir / f"done-{rank}").exists() for rank in range(world_size))
        # a rank that finished its work and then crashed in teardown has still done its part
        if not done:
            raise RuntimeError(f"{_failed_first(label, workdir, codes)} (exit codes {codes})\n"
                               + _tails(logs, workers))
    finally:
        if not ranks.reuse:
            ranks.close()
        elif not (all(c == 0 for c in codes) or all(c == EXIT_UNAVAILABLE for c in codes)):
            ranks.discard(workers)  # a rank that cannot run here retires itself if it left a group open


def _failed_first(label: str, workdir: Path, codes: list[int | None]) -> str:
    """What a failed job says first: the ranks whose own code raised, with the first one's error (what
    it wrote to ``error-RANK.txt``); ``a rank failed`` when none wrote one."""
    errors = [workdir / f"error-{rank}.txt" for rank in range(len(codes))]
    failed = [(rank, e.read_text().strip()) for rank, e in enumerate(errors) if e.exists()]
    if not failed:
        return f"{label}: a rank failed"
    return _failed_line(label, _own(failed)[0], str(len(codes)))


def _unavailable(workdir: Path) -> VariationUnavailable:
    """The skip of ranks that cannot run here, with the reason a rank wrote to ``skip.txt``."""
    skip = workdir / "skip.txt"
    return VariationUnavailable(skip.read_text() if skip.exists() else "?")


def require_ranks(world_size: int, label: str) -> None:
    """Under torchrun: ``VariationUnavailable`` when the launched world has fewer than ``world_size``
    ranks (spawned ranks are never short)."""
    if world.launched() and world_size > world.size():
        raise VariationUnavailable(
            f"{label} runs on {world_size} ranks; this launched world has {world.size()}: launch "
            f"torchrun with --nproc-per-node {world_size} or more, or run it in a pytest without torchrun")


def _run_in_world(module: str, function: str, job: Any, workdir: Path, label: str, world_size: int,
                  timeout: float) -> None:
    """Under torchrun: this process is one rank; the world's first ``world_size`` ranks run their part
    here (on a group of their own, their default one meanwhile: :func:`world.as_world`), then every
    rank agrees on the outcome.

    ``workdir`` must be the same on every rank (:func:`world.shared`)."""
    import importlib

    require_ranks(world_size, label)
    group = world.part(world_size, timeout)  # every rank: creating a group is the world's collective
    workdir.mkdir(parents=True, exist_ok=True)
    rank = world.rank()
    code: int | None = None  # a rank of the world outside the job's ranks only waits for the outcome
    if rank < world_size:
        job_path = workdir / f"job-{rank}.pkl"
        with open(job_path, "wb") as f:
            pickle.dump(list(sys.path), f)
            pickle.dump(job, f)
        try:
            with world.as_world(group):
                code = int(getattr(importlib.import_module(module), function)(str(job_path), rank))
        except Exception as exc:  # noqa: BLE001 - every rank must reach the gather below, or the others hang
            code = rank_failed(workdir, rank, exc)
    error = workdir / f"error-{rank}.txt"
    agreed = world.gather((code, world.group_count(), error.read_text() if error.exists() else ""))
    world.align_group_count([count for _, count, _ in agreed])
    codes = [c for c, _, _ in agreed[:world_size]]
    if all(c == 0 for c in codes):
        return
    if all(c == EXIT_UNAVAILABLE for c in codes):
        raise _unavailable(workdir)
    world.forget(world_size)  # a rank may have left the others mid-collective: a new group next time
    raise RuntimeError(failure(label, [(c, e) for c, _, e in agreed[:world_size]], world.size(), timeout))


def failure(label: str, ranks: list[tuple[int | None, str]], world_size: int, timeout: float) -> str:
    """One line for a job that failed on the launched world: the ranks whose own code raised, with
    the first one's error, apart from the ranks that then waited for them in a collective.

    >>> print(failure("fsdp", [(1, "RuntimeError: Timed out waiting 8000ms for recv"), (1, "OSError: disk full")], 2, 8))
    fsdp: rank 1 of 2 failed: OSError: disk full; rank 0 then waited for it in a collective until the 8s timeout (backend gloo)
    """
    failed = [(r, e) for r, (c, e) in enumerate(ranks) if c not in (0, EXIT_UNAVAILABLE)]
    own, waiting = _own(failed)
    of = f"{len(ranks)}" if len(ranks) == world_size else f"{len(ranks)} (of a world of {world_size})"
    line = _failed_line(label, own, of)
    if waiting:
        line += (f"; rank{'s' if len(waiting) > 1 else ''} {_listed(waiting)} then waited for it in a "
                 f"collective until the {timeout:g}s timeout")
    return f"{line} (backend {world.backend() if world.launched() else 'gloo'})"


def _own(failed: list[tuple[int, str]]) -> tuple[list[tuple[int, str]], list[int]]:
    """The failed ranks whose own code raised (``(rank, error)``), and those that only waited for them."""
    own = [(r, e) for r, e in failed if not waited(e)] or failed
    return own, [r for r, e in failed if (r, e) not in own]


def _failed_line(label: str, own: list[tuple[int, str]], of: str) -> str:
    return (f"{label}: rank{'s' if len(own) > 1 else ''} {_listed([r for r, _ in own])} of {of} failed: "
            f"{own[0][1] or 'see that rank output'}")


def _listed(ranks: list[int]) -> str:
    text = ", ".join(str(r) for r in ranks)
    return text if len(ranks) < 2 else text.rsplit(", ", 1)[0] + " and " + str(ranks[-1])


def join(workdir: Path, rank: int, world_size: int) -> tuple[int, bool]:
    """In a rank: join the ranks' group, a file rendezvous in ``workdir``, or the launched world when
    pytest runs under torchrun. ``(world size, whether this call opened the group)``."""
    import torch.distributed as dist

    if world.launched():
        world.ensure()
        return dist.get_world_size(), False
    dist.init_process_group("gloo", store=file_store(workdir / "rendezvous", world_size), rank=rank,
                            world_size=world_size)
    return world_size, True


def file_store(path: Path, world_size: int) -> Any:
    """The rendezvous of ``world_size`` processes through the file ``path``. Not a ``file://`` URL:
    torch does not unquote one, so a directory named ``ckpt-ddp+compile`` would never meet."""
    import torch.distributed as dist

    return dist.FileStore(str(Path(path).resolve()), world_size)


def leave(owned: bool) -> None:
    """Close the group :func:`join` opened (never the launched world)."""
    import torch.distributed as dist

    if owned:
        dist.destroy_process_group()


def _code(result: Path, worker: "pool.Worker") -> int | None:
    """The rank's exit code: what its worker wrote, or how the worker died; None while it runs."""
    if not result.exists():
        if worker.alive():
            return None
        if not result.exists():  # it may have written the code just before it exited
            return worker.proc.returncode or 1
    return int(result.read_text())  # written whole: the worker renames it into place


def _tails(logs: list[Path], workers: list["pool.Worker"]) -> str:
    out = [children.tail(log, f"rank {rank} output") for rank, log in enumerate(logs)]
    out += [children.tail(w.log, f"rank {rank} worker output") for rank, w in enumerate(workers)
            if w.log.exists() and w.log.stat().st_size]
    return "\n".join(out)


def rank_device() -> str:
    """In a rank: its device type: the launched world's (``cuda`` under NCCL), else ``cpu``."""
    return world.device_type() if world.launched() else "cpu"


def mesh(size: int) -> Any:
    """In a rank: the 1-D device mesh of its group (``size`` ranks) on :func:`rank_device`."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(rank_device(), (size,), mesh_dim_names=world.mesh_names(size))


#: what FSDP2's ``fully_shard`` raises for a model it cannot shard (a 0-dim parameter such as CLIP's
#: ``logit_scale``)
SHARD_REFUSALS = (ValueError, TypeError, NotImplementedError, AssertionError)


def shard_refusal(model: Any) -> str | None:
    """What FSDP2's ``fully_shard`` would refuse in ``model``, decided here, before any rank starts
    (starting them costs a torch import each): a scalar (0-dim) parameter such as CLIP's
    ``logit_scale``, or a non-contiguous one, in torch's own words; ``None`` when it names none."""
    for name, p in model.named_parameters():
        if p.dim() == 0:
            return f"fully_shard doesn't support scalar parameters. Change {name} to a 1D tensor with numel equal to 1."
        if not p.is_contiguous():
            return f"FSDP does not support non-contiguous parameters yet: {name} {tuple(p.shape)} {p.stride()}"
    return None


def shard_here(model: Any, size: int, workdir: Path, owned: bool) -> bool:
    """In a rank: ``model`` moved to this rank's device and sharded over its group of ``size``
    (:func:`shard`); ``False`` when FSDP2 refuses the model: the reason in ``skip.txt``, the group
    left (every rank refuses the same model: none waits on another)."""
    model.to(rank_device())
    try:
        shard(model, mesh(size))
    except SHARD_REFUSALS as exc:
        (workdir / "skip.txt").write_text(f"FSDP2 cannot shard this model: {exc}")
        leave(owned)
        return False
    return True


def shard(model: Any, mesh: Any) -> None:
    """``fully_shard`` every block of every ``nn.ModuleList``, then the root (the usual FSDP2 recipe)."""
    from torch import nn
    from torch.distributed.fsdp import fully_shard

    for module in list(model.modules()):
        if isinstance(module, nn.ModuleList):
            for block in module:
                if any(True for _ in block.parameters()):
                    fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
