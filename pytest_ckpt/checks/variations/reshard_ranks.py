"""The ranks of the ``reshard-N`` variations: save with FSDP2 + DCP on 2 ranks, load on N.

Both sides gather what they hold (the full model state and the full optimizer state, by parameter
name) and rank 0 writes it with ``pc.save``; the parent compares the two files. Run by
:func:`pytest_ckpt.processes.ranks.run_ranks` (functions :func:`save_main` and
:func:`load_main`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ...processes import children
from ...processes.ranks import EXIT_UNAVAILABLE, join, leave, rank_failed, read_rank_job, shard_here

#: the key of the optimizer state in the default save's DCP state dict, and the prefix of its
#: gathered tensors (``optimizer.<parameter name>.<state key>``)
OPTIMIZER = "optimizer"
MODEL = "model"


@dataclass
class ReshardJob:
    """What the ranks of one side need; pickled by ``run_ranks`` after ``sys.path``."""

    factory: tuple[str, str]
    config_blob: bytes | None
    #: the project's function of this side (``save(model, path)`` or ``load_sharded(model, path)``)
    project: tuple[str, str] | None
    #: the keywords (config, optimizer) it names
    takes: tuple[str, ...]
    seed: int
    world_size: int
    checkpoint_dir: str
    #: where rank 0 writes what this side's ranks hold, gathered
    gathered_path: str


def default_save(model: Any, path: Path, *, optimizer: Any) -> None:
    """Each rank writes its shards of the model and its optimizer state with DCP."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({MODEL: model_state, OPTIMIZER: optim_state}, checkpoint_id=str(path))


def default_load(model: Any, path: Path, *, optimizer: Any) -> None:
    """DCP's resharding load into the ``fully_shard``'ed model and its optimizer, through the safe
    readers (:func:`pytest_ckpt.api.load_dcp`: the project's metadata is never unpickled freely)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from ... import api

    model_state, optim_state = get_state_dict(model, optimizer)
    if api.schema(path).located_at == ():  # a save of the model alone (the fsdp default): flat names
        api.load_dcp(model_state, path)
        set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state)
        return
    state = {MODEL: model_state, OPTIMIZER: optim_state}
    api.load_dcp(state, path)
    set_state_dict(model, optimizer, model_state_dict=state[MODEL], optim_state_dict=state[OPTIMIZER])


def optimizer_for(model: Any):
    """The optimizer of :func:`~.base.train_one_step` (AdamW, lr 1e-3) over the model's floating parameters."""
    import torch

    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad and p.is_floating_point()], lr=1e-3)


def gathered(model: Any, optimizer: Any) -> dict:
    """The full model state and the full optimizer state (``optimizer.<name>.<key>``); on rank 0 only."""
    import torch
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    out = dict(get_model_state_dict(model, options=options))
    optim = get_optimizer_state_dict(model, optimizer, options=options)
    for name, state in optim.get("state", {}).items():
        for key, value in state.items():
            out[f"{OPTIMIZER}.{name}.{key}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    return out


def _side(job_path: str, rank: int, *, load: bool) -> int:
    workdir = Path(job_path).parent

    def rebuild(job: ReshardJob):
        project = children.import_object(*job.project) if job.project is not None else None
        return (job, children.import_object(*job.factory),
                children.unpickled(job.config_blob), project)

    rebuilt = read_rank_job(job_path, rebuild, "the factory, config, save or load function")
    if rebuilt is None:
        return EXIT_UNAVAILABLE
    job, factory, config, project = rebuilt

    import torch
    import torch.distributed as dist

    from ... import api
    from .base import perturb, train_one_step

    size, owned = join(workdir, rank, job.world_size)  # under torchrun: the world's first ranks
    try:
        # the load side starts from other weights: a load that loads nothing cannot pass
        seed = job.seed + (1 if load else 0)
        torch.manual_seed(seed)
        model = factory(config) if job.config_blob is not None else factory()
        perturb(model, seed)
        if not shard_here(model, size, workdir, owned):
            return EXIT_UNAVAILABLE
        if load:
            optimizer = optimizer_for(model)
        else:
            optimizer = train_one_step(model)[0]  # a real optimizer state, after one step
        kw: dict = {}
        if project is None:
            kw["optimizer"] = optimizer
            function: Callable = default_load if load else default_save
        else:
            function = project
            if "optimizer" in job.takes:
                kw["optimizer"] = optimizer
            if "config" in job.takes:
                kw["config"] = config
        function(model, Path(job.checkpoint_dir), **kw)
        full = gathered(model, optimizer)
        if rank == 0:
            api.save(full, job.gathered_path)  # atomic: a crash never leaves half a reference
        dist.barrier()
    except BaseException as exc:  # noqa: BLE001 - no teardown: the other ranks may wait in a collective
        return rank_failed(workdir, rank, exc)
    (workdir / f"done-{rank}").touch()
    leave(owned)
    return 0


def save_main(job_path: str, rank: int) -> int:
    return _side(job_path, rank, load=False)


def load_main(job_path: str, rank: int) -> int:
    return _side(job_path, rank, load=True)
