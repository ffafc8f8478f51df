"""``fsdp``: FSDP2 ``fully_shard`` across 2 real processes, each rank saving its shards with DCP
(under torchrun: across the launched world, every rank of it).

The ranks rebuild the model from the factory, so it must be importable
(module-level); otherwise this variation is skipped with the reason. The
reference is the full state gathered from the ranks at save time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...errors import VariationUnavailable
from ...processes import ranks
from ...processes.children import import_object, unpickled
from ...processes.ranks import EXIT_UNAVAILABLE, FSDP_WORLD_SIZE, join, leave, rank_failed, read_rank_job, shard_here
from .base import SaveJob, Saved, SaveSide, perturb, train_one_step


class Fsdp(SaveSide):
    suffix = ""
    default_save = "dcp.save(fully_shard(model).state_dict()) on 2 ranks"

    def produce(self, job: SaveJob) -> Saved:
        _check_available()
        factory = ranks.importable(job.factory, "factory")
        save = ranks.importable(job.save, "save function") if job.save is not None else None
        config_blob = ranks.pickled(job.config, "config") if job.has_config else None
        from ...processes import world

        # under torchrun every rank writes its shards into rank 0's directory
        directory = world.shared(job.directory) if world.launched() else job.directory
        checkpoint_dir = directory / "dcp"
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
        return Saved(checkpoint_dir, reference=reference, saved_with=self.saved_with(job))


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
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from ... import api

    world_size, owned = join(workdir, rank, FSDP_WORLD_SIZE)
    try:
        torch.manual_seed(job.seed)  # every rank starts from the same weights, as in real training
        model = factory(config) if job.config_blob is not None else factory()
        perturb(model, job.seed)
        if not shard_here(model, world_size, workdir, owned):
            return EXIT_UNAVAILABLE
        kw: dict = {}
        if "optimizer" in job.save_takes:
            kw["optimizer"] = train_one_step(model)[0]
        if "config" in job.save_takes:
            kw["config"] = config
        save(model, Path(job.checkpoint_dir), **kw)
        full = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if rank == 0:
            api.save(full, job.full_state_path)  # atomic: a crash never leaves half a reference
        dist.barrier()
        if rank == 0 and job.save is not None:
            reason = _rank_shards_in_one_file(Path(job.checkpoint_dir))
            if reason:
                (workdir / "skip.txt").write_text(reason)
                return EXIT_UNAVAILABLE
    except BaseException as exc:  # noqa: BLE001 - no teardown: the other rank may wait for us
        return rank_failed(workdir, rank, exc)
    (workdir / f"done-{rank}").touch()
    leave(owned)
    return 0


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
