"""``fsdp``: FSDP2 ``fully_shard`` across 2 real processes, each rank saving its shards with DCP
(under torchrun: across the launched world, every rank of it).

The ranks rebuild the model from the factory, so it must be importable
(module-level); otherwise this variation is skipped with the reason. The
reference is the full state gathered from the ranks at save time.

The project's ``save`` is called the way FSDP2 training calls it. Which way is decided before any
rank starts, from one call of it here on the model as the factory builds it:

- it wrote a ``torch.distributed.checkpoint`` directory (``.metadata``), or it needs the ranks'
  process group to run at all: every rank calls it with its sharded model, one path for all (DCP
  writes each rank's own files there);
- it wrote anything else (one ``torch.save`` file, a ``save_pretrained`` directory): rank 0 calls it,
  with the full state dict (and optimizer state) gathered from the ranks in a model of its own, as
  FSDP2 training saves such a checkpoint (two ranks writing one path would race on it).

A model FSDP2 refuses to shard (a scalar parameter) is skipped here too, before any rank starts.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...errors import VariationUnavailable
from ...processes import ranks
from ...processes.children import import_object, unpickled
from ...processes.ranks import EXIT_UNAVAILABLE, FSDP_WORLD_SIZE, join, leave, rank_failed, read_rank_job, shard_here
from .base import SaveJob, Saved, SaveSide, describe, perturb, train_one_step

#: how the project's save runs on the ranks (:func:`writes_on`)
EVERY_RANK, RANK_0 = "every rank", "rank 0"


class Fsdp(SaveSide):
    suffix = ""
    default_save = "dcp.save(fully_shard(model).state_dict()) on 2 ranks"

    def produce(self, job: SaveJob) -> Saved:
        factory = ranks.importable(job.factory, "factory")
        save = ranks.importable(job.save, "save function") if job.save is not None else None
        config_blob = ranks.pickled(job.config, "config") if job.has_config else None
        # decided here, before importing FSDP2 or starting any rank (seconds each)
        refused = ranks.shard_refusal(job.build())
        if refused:
            raise VariationUnavailable(f"FSDP2 cannot shard this model: {refused}")
        _check_available()
        from ...processes import world

        # under torchrun every rank writes its shards into rank 0's directory
        directory = world.shared(job.directory) if world.launched() else job.directory
        # under torchrun every rank of the world would call it here: on one path, or a collective
        save_on = EVERY_RANK if save is None or world.launched() else writes_on(job, directory / "save-probe")
        checkpoint_dir = directory / ("dcp" if save_on == EVERY_RANK else "checkpoint")
        full_state = directory / "full_state.pt"
        run_fsdp_save(
            FsdpJob(
                factory=factory,
                config_blob=config_blob,
                save=save,
                seed=job.seed,
                checkpoint_dir=str(checkpoint_dir),
                full_state_path=str(full_state),
                save_takes=tuple(sorted(job.save_takes)),
                save_on=save_on,
            ),
            directory / "workers",
            timeout=job.fsdp_timeout,
        )
        from ... import api

        state = api.load_state_dict(full_state)
        reference = job.build()
        try:
            # a live module keeps tie groups and can run `inputs`; the state is what the ranks held
            reference.load_state_dict(state, strict=True)
        except Exception:  # noqa: BLE001 - fall back to comparing the gathered tensors alone
            reference = state
        saved_with = self.saved_with(job) if save_on == EVERY_RANK else f"{describe(job.save)} on rank 0, " \
            "with the full state gathered from 2 FSDP2 ranks"
        return Saved(checkpoint_dir, reference=reference, saved_with=saved_with)


def writes_on(job: SaveJob, probe: Path) -> str:
    """Where FSDP2 training runs the project's save: :data:`EVERY_RANK` for a save that writes a
    ``torch.distributed.checkpoint`` directory (each rank its own files) or that needs the ranks'
    process group to run; :data:`RANK_0` for any other (one file, a ``save_pretrained`` directory),
    which FSDP2 training calls on rank 0 with the gathered full state. Decided by one call of it here,
    into ``probe`` (removed afterwards), on the model the factory builds."""
    probe.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():  # DCP's "assuming the intent is to save in a single process"
            warnings.simplefilter("ignore")
            model = job.build()
            optimizer = train_one_step(model)[0] if "optimizer" in job.save_takes else None
            job.call_save(model, probe / "checkpoint", optimizer=optimizer)
        ran = True
    except Exception:  # noqa: BLE001 - it needs the ranks (their group, their rank): it runs on each
        ran = False
    sharded = any(probe.rglob(".metadata"))
    shutil.rmtree(probe, ignore_errors=True)
    return RANK_0 if ran and not sharded else EVERY_RANK


def _check_available() -> None:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        raise VariationUnavailable("torch.distributed with gloo is not available in this torch build")
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        raise VariationUnavailable(
            f"FSDP2 fully_shard is not available in torch {torch.__version__}"
        ) from None


FSDP = Fsdp()


# -- on each rank ---------------------------------------------------------------------------------

@dataclass
class FsdpJob:
    """What the ranks need; pickled to ``job.pkl`` (``sys.path`` first, so the rest can unpickle)."""

    factory: tuple[str, str]
    config_blob: bytes | None
    save: tuple[str, str] | None
    seed: int
    checkpoint_dir: str
    full_state_path: str
    #: the keywords (config, optimizer) the project's save names
    save_takes: tuple[str, ...] = ()
    #: :data:`EVERY_RANK` (each with its sharded model) or :data:`RANK_0` (with the gathered state)
    save_on: str = EVERY_RANK


def run_fsdp_save(job: FsdpJob, workdir: Path, *, timeout: float = ranks.FSDP_TIMEOUT_S) -> None:
    """Run :func:`_rank_main` on ``FSDP_WORLD_SIZE`` rank workers (under torchrun: every rank of the
    launched world) and wait for all.

    Raises ``VariationUnavailable`` when a rank reports it cannot run here,
    ``RuntimeError`` with the ranks' output when one fails or time runs out.
    """
    ranks.run_ranks(__name__, job, workdir, timeout=timeout)


def default_fsdp_save(model: Any, path: Path) -> None:
    """Each rank writes its own shards: ``dcp.save(model.state_dict(), checkpoint_id=path)``."""
    import torch.distributed.checkpoint as dcp

    dcp.save(model.state_dict(), checkpoint_id=str(path))


class SharedPath(Exception):
    """Every rank ran the project's save on one path, and they collided there."""


def _rank_main(job_path: str, rank: int) -> int:
    workdir = Path(job_path).parent

    def rebuild(job: FsdpJob):
        return (job, import_object(*job.factory),
                unpickled(job.config_blob),
                import_object(*job.save) if job.save is not None else default_fsdp_save)

    rebuilt = read_rank_job(job_path, rebuild, "the factory, config or save function")
    if rebuilt is None:
        return EXIT_UNAVAILABLE
    job, factory, config, save = rebuilt

    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    from ... import api

    world_size, owned = join(workdir, rank, FSDP_WORLD_SIZE)
    full_options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    try:
        torch.manual_seed(job.seed)  # every rank starts from the same weights, as in real training
        model = factory(config) if job.config_blob is not None else factory()
        perturb(model, job.seed)
        if not shard_here(model, world_size, workdir, owned):
            return EXIT_UNAVAILABLE
        kw: dict = {}
        optimizer = train_one_step(model)[0] if "optimizer" in job.save_takes else None
        if "config" in job.save_takes:
            kw["config"] = config
        path = Path(job.checkpoint_dir)
        if job.save_on == RANK_0:  # gathered on every rank (a collective), written by rank 0 alone
            full = get_model_state_dict(model, options=full_options)
            moments = get_optimizer_state_dict(model, optimizer, options=full_options) if optimizer else None
            if rank == 0:
                whole = factory(config) if job.config_blob is not None else factory()
                whole.load_state_dict(full)
                if optimizer is not None:
                    kw["optimizer"] = _whole_optimizer(whole, moments)
                save(whole, path, **kw)
        else:
            if optimizer is not None:
                kw["optimizer"] = optimizer
            _save_on_every_rank(save, model, path, kw)
            full = get_model_state_dict(model, options=full_options)
        if rank == 0:
            api.save(full, job.full_state_path)  # atomic: a crash never leaves half a reference
        dist.barrier()
        if rank == 0 and job.save is not None and job.save_on == EVERY_RANK:
            reason = _rank_shards_in_one_file(path)
            if reason:
                (workdir / "skip.txt").write_text(reason)
                return EXIT_UNAVAILABLE
    except BaseException as exc:  # noqa: BLE001 - no teardown: the other rank may wait for us
        return rank_failed(workdir, rank, exc)
    (workdir / f"done-{rank}").touch()
    leave(owned)
    return 0


def _save_on_every_rank(save: Any, model: Any, path: Path, kw: dict) -> None:
    """The project's save on this rank, with its sharded model; a collision on the path every rank
    was given is said as such (the other rank renamed or removed the file this one wrote)."""
    try:
        save(model, path, **kw)
    except OSError as exc:
        named = [f for f in (exc.filename, exc.filename2) if f]
        if not any(Path(f).parent == path.parent and Path(f).name.startswith(path.name) for f in named):
            raise
        raise SharedPath(
            f"{type(exc).__name__}: {exc}: both ranks ran your save on one path ({path.name}), and they collided "
            "there. Your save needs the ranks' process group, so under FSDP2 every rank runs it: write the "
            "checkpoint on rank 0 alone (if dist.get_rank() == 0:, after gathering the full state dict), or "
            "each rank its own files with torch.distributed.checkpoint") from exc


def _whole_optimizer(model: torch.nn.Module, moments: dict) -> torch.optim.Optimizer:
    """On rank 0: an AdamW over ``model`` holding the gathered optimizer state (``moments``, by
    parameter name), the optimizer a training save is handed beside the gathered weights."""
    names = [n for n, p in model.named_parameters() if p.requires_grad and p.is_floating_point()]
    params = dict(model.named_parameters())
    optimizer = torch.optim.AdamW([params[n] for n in names], lr=1e-3)
    [group] = moments["param_groups"]
    index = {name: i for i, name in enumerate(names)}
    optimizer.load_state_dict({
        "state": {index[n]: s for n, s in moments["state"].items() if n in index},
        "param_groups": [{**{k: v for k, v in group.items() if k not in ("params", "param_names")},
                          "params": [index[n] for n in group["params"] if n in index]}]})
    return optimizer


def _rank_shards_in_one_file(path: Path) -> str:
    """Why the project's save, run on every rank, wrote no checkpoint of the whole model: a
    ``torch.save`` of the sharded model's ``state_dict()`` (DTensors, each rank's own shards)."""
    from ... import formats
    from ...errors import CheckpointError
    from ...formats.pickle_scan import DTENSORS

    if not path.is_file():
        return ""
    try:
        formats.read(path, meta=True)  # the safe readers: nothing the project's file holds runs
    except CheckpointError as exc:  # two ranks writing one file can leave anything
        found = ("a torch file of DTensors" if exc.cause.startswith(DTENSORS)
                 else f"a file pytest-ckpt cannot read ({exc.kind}: {exc.cause[:120]})")
    else:
        return ""
    return (f"your save wrote {found}: each rank saved its own shards with torch.save. If your "
            "training shards the model with FSDP2, save it with torch.distributed.checkpoint, or "
            "torch.save get_model_state_dict(model, options=StateDictOptions(full_state_dict=True)) "
            "on rank 0; if it does not, leave fsdp out of the marker")


if __name__ == "__main__":
    ranks.rank_entry(_rank_main)
