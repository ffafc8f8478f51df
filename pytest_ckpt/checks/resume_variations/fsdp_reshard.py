"""``fsdp-reshard-3`` and ``fsdp-reshard-1``: saved on 2 FSDP2 ranks, resumed on 3 (or 1).

The uninterrupted run runs on 2 ranks and saves after step ``at`` (its first ``at`` steps are the
interrupted run); the resumed half starts on 3 (or 1) ranks, with the same sharding as the ``fsdp``
variation (:func:`.fsdp.sharded`), and loads that checkpoint through the project's ``load``. Rank 0
of each gathers the weights and optimizer state to full tensors by parameter name, and every rank
hands over the samples it trained on; :func:`pytest_ckpt.resume.across.judge` compares them: the
state right after load bitwise, the later losses within a tolerance the report states, and each
sample of the remaining global batches trained on exactly once across the ranks (``resume-data``
names the ranks that repeat or skip samples: a data position stored per rank does not move to
another world size).

The ranks are this module's :func:`_rank_main`, run by
:func:`pytest_ckpt.processes.ranks.run_ranks` on the reused rank workers; under torchrun
on the launched world's first 2 ranks, then its first N (a world of fewer than N skips, saying so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ResumeError, ResumeMismatch, ResumeUnavailable
from .base import ResumeJob, ResumeSide
from .fsdp import (_check_available, enter, failed, hand_over, rank_inputs, refuse_unshardable, run_and_collect,
                   sharder)

#: the world size of the uninterrupted run (and the interrupted run's first half)
SAVED_ON = 2


@dataclass
class ReshardResumeJob:
    """What each rank of one of the two runs needs; pickled by ``run_ranks`` after ``sys.path``."""

    functions: dict[str, tuple[str, str]]
    config_blob: bytes | None
    steps: int
    at: int
    world_size: int
    #: the checkpoint the uninterrupted run writes after step ``at`` and the resumed run loads
    checkpoint: str
    resumed: bool
    #: ``ignore=``: left out of the components the ranks find (the gathered weights, optimizer state
    #: and every rank's samples are still compared)
    ignore: tuple[str, ...] = ()


class FsdpReshard(ResumeSide):
    def __init__(self, world_size: int) -> None:
        self.world_size = world_size

    def check(self, job: ResumeJob):
        __tracebackhide__ = True
        from ...resume.across import judge, tolerance
        from ...resume.check import ignore_paths, resume_points
        from ...processes import world

        from ...processes.ranks import require_ranks

        name = f"fsdp-reshard-{self.world_size}"
        _check_available()
        require_ranks(max(SAVED_ON, self.world_size), name)
        points = resume_points(job.steps, job.at)
        if len(points) > 1:
            raise ResumeUnavailable(f"{name} resumes at one point (at={job.at!r}): give at=N")
        at = points[0]
        functions, config_blob = rank_inputs(job)
        refuse_unshardable(job)
        # under torchrun: the world's first 2 ranks, then its first N, all in rank 0's directory
        workdir = world.shared(job.workdir) if world.launched() else job.workdir
        checkpoint = str(workdir / f"checkpoint-after-step-{at}")
        traces = []
        for size, resumed in ((SAVED_ON, False), (self.world_size, True)):
            rank_job = ReshardResumeJob(functions, config_blob, job.steps, at, size, checkpoint, resumed,
                                        ignore_paths(job.options.get("ignore", ())))
            results = run_and_collect(__name__, rank_job, workdir / f"ranks-{size}", size,
                                      timeout=job.fsdp_timeout, label=f"{name} (on {size})")
            for rank, (kind, payload) in enumerate(results):
                if kind != "ok":
                    raise ResumeError(f"rank {rank} of {size}: {payload or 'no result'}")
            traces.append(results[0][1])
        atol, rtol = tolerance(job.atol, job.rtol)
        report = judge(*traces, at, job.steps, atol=atol, rtol=rtol)
        if not report.ok:
            raise ResumeMismatch(report)
        return report


# -- on each rank ---------------------------------------------------------------------------------

def gather(run: Any, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """The run's trained modules and optimizers as full state by parameter name (on rank 0; every rank
    calls it: it is a collective). An optimizer's state in the resume check's form (``state``,
    ``groups``, ``params``), keyed by the parameter names of the module it trains. Copied: on one
    rank the full state is the live parameters themselves, which later steps change."""
    import torch
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    from ...resume.capture import freeze
    from ...resume.state import optimizer_params, run_state

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    rs = run_state(run, streams=()).without(ignore)
    modules = rs.trained_modules()
    out: dict[str, Any] = {c.path: dict(get_model_state_dict(c.obj, options=options)) for c in modules}
    for c in rs.of_kind("optimizer"):
        if not c.obj.state:  # torch would fill an empty state with a step of lr 0: read it as it is
            out[c.path] = {"state": {}, "params": [],
                           "groups": [{k: v for k, v in g.items() if k not in ("params", "param_names")}
                                      for g in c.obj.param_groups]}
            continue
        held = {id(p) for p in optimizer_params(c.obj)}
        owners = [m.obj for m in modules if any(id(p) in held for p in m.obj.parameters())]
        model = owners[0] if len(owners) == 1 else torch.nn.ModuleList(owners)
        sd = get_optimizer_state_dict(model, c.obj, options=options)
        groups = sd.get("param_groups", [])
        out[c.path] = {"state": {name: dict(s) for name, s in sd.get("state", {}).items()},
                       "groups": [{k: v for k, v in g.items() if k not in ("params", "param_names")} for g in groups],
                       "params": [name for g in groups for name in g["params"]]}
    return freeze(out)


def _train(job: ReshardResumeJob, fns: dict[str, Any], config: Any, mesh: Any) -> Any:
    import torch.distributed as dist

    from ...resume.across import RanksTrace, global_loss
    from ...resume.coverage import samples
    from ...resume.runner import POISON, SEED, Functions, call, load_run, start_run, step_output
    from ...resume.state import available_streams, classes, run_state

    functions = Functions(fns["start"], fns["step"], fns["save"], fns["load"], config, wrap=sharder(mesh),
                          ignore=job.ignore)
    streams = available_streams()
    trace = RanksTrace(job.world_size)
    where = f"on {job.world_size} ranks"
    if job.resumed:  # load meets the bare modules; they are sharded once it returns
        run, _ = start_run(functions, POISON, streams, f"starting the run resumed after step {job.at} {where}",
                           wrap=False)
        run, _, _ = load_run(functions, run, Path(job.checkpoint),
                             f"loading the checkpoint saved on {SAVED_ON} ranks after step {job.at} from "
                             f"{job.checkpoint}, {where}", streams)
        trace.snapshots[job.at] = gather(run, job.ignore)
        label, first = f"the run resumed after step {job.at} {where}", job.at + 1
    else:
        run, _ = start_run(functions, SEED, streams, f"starting the uninterrupted run {where}")
        label, first = f"the uninterrupted run {where}", 1
    rs = run_state(run, streams=()).without(job.ignore)
    trace.classes = {p: k for p, k in classes(rs).items()}
    trace.trained = frozenset(c.path for c in rs.trained_modules())
    trace.kinds = {**{p: "module" for p in trace.trained}, **{c.path: "optimizer" for c in rs.of_kind("optimizer")}}
    for n in range(first, job.steps + 1):
        loss, batch = step_output(functions, run, n, label)
        rows = [] if batch is None else samples(batch)
        everyone: list[Any] = [None] * job.world_size
        dist.all_gather_object(everyone, (loss, rows))
        trace.losses.append(global_loss([e[0] for e in everyone], [len(e[1]) for e in everyone]))
        trace.samples.append([e[1] for e in everyone])
        if not job.resumed and n == job.at:
            trace.snapshots[n] = gather(run, job.ignore)
            call(functions.save, (run, Path(job.checkpoint)), f"saving after step {n} to {job.checkpoint} {where}")
    return trace


def _rank_main(job_path: str, rank: int) -> int:
    from ...processes.ranks import EXIT_UNAVAILABLE

    workdir = Path(job_path).parent
    entered = enter(job_path, rank)
    if entered is None:
        return EXIT_UNAVAILABLE
    job, fns, config, mesh, owned = entered
    try:
        trace = _train(job, fns, config, mesh)
        result: tuple[str, Any] = ("ok", trace if rank == 0 else None)
    except BaseException as exc:  # noqa: BLE001 - the parent raises it, naming the rank
        return failed(exc, workdir, rank, owned)
    return hand_over(workdir, rank, result, owned)


FSDP_RESHARD_3 = FsdpReshard(3)
FSDP_RESHARD_1 = FsdpReshard(1)
