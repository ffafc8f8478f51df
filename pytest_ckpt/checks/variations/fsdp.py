"""``fsdp``: FSDP2 ``fully_shard`` across 2 real processes, each rank saving its shards with DCP
(under torchrun: across the launched world, every rank of it).

The ranks rebuild the model from the factory, so it must be importable
(module-level); otherwise this variation is skipped with the reason. The
reference is the full state gathered from the ranks at save time.
"""

from __future__ import annotations


import torch

from .registry import VariationUnavailable
from .base import SaveJob, Saved, SaveSide


class Fsdp(SaveSide):
    suffix = ""
    default_save = "dcp.save(fully_shard(model).state_dict()) on 2 ranks"

    def produce(self, job: SaveJob) -> Saved:
        from ...processes import ranks as processes

        _check_available()
        factory = processes.importable(job.factory, "factory")
        save = processes.importable(job.save, "save function") if job.save is not None else None
        config_blob = processes.pickled(job.config, "config") if job.has_config else None
        from ...processes import world

        # under torchrun every rank writes its shards into rank 0's directory
        directory = world.shared(job.directory) if world.launched() else job.directory
        checkpoint_dir = directory / "dcp"
        full_state = directory / "full_state.pt"
        processes.run_fsdp_save(
            processes.FsdpJob(
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
