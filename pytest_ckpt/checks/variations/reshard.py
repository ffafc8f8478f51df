"""``reshard-3``, ``reshard-1``: saved with FSDP2 + DCP on 2 ranks, loaded on 3 (or 1) ranks into a
``fully_shard``'ed model, gathered, and compared bitwise with what the 2 ranks saved: the weights and
the optimizer state, by parameter name.

A checkpoint that loads on the world size that wrote it can still load wrong on another (a load
that puts the shards together by rank, not by the offsets the checkpoint stores): 16 rows on 3
ranks are 6, 6 and 4, so the shards are uneven on purpose. The project's ``save(model, path)`` runs
on the 2 saving ranks (with ``optimizer=`` when it names it: a real AdamW after one step; the
optimizer state is compared only then), its ``load_sharded(model, path)`` on the loading ranks
(default: ``dcp.load`` into ``get_state_dict``, then ``set_state_dict``). The factory must be
importable and ``config`` picklable (the ranks are other processes), else the variation is skipped.
Under torchrun the launched world's first 2 ranks save and its first N load (a world of fewer than
N ranks skips ``reshard-N``, saying so).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ...checkpoint.notes import Note
from .base import SaveJob, Saved, SaveSide, describe

SAVE_WORLD_SIZE = 2


class Reshard(SaveSide):
    suffix = ""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.default_save = f"dcp.save(get_state_dict(fully_shard(model), optimizer)) on {SAVE_WORLD_SIZE} ranks"

    def produce(self, job: SaveJob) -> Saved:
        from ...processes import ranks
        from . import reshard_ranks
        from .fsdp import _check_available
        from ... import api

        _check_available()
        from ...processes import world

        ranks.require_ranks(max(SAVE_WORLD_SIZE, self.world_size), f"reshard-{self.world_size}")
        factory = ranks.importable(job.factory, "factory")
        save = ranks.importable(job.save, "save function") if job.save is not None else None
        load = (ranks.importable(job.load_sharded, "load_sharded function")
                if job.load_sharded is not None else None)
        config_blob = ranks.pickled(job.config, "config") if job.has_config else None
        # under torchrun: the world's first 2 ranks save, its first N load, all in rank 0's directory
        directory = world.shared(job.directory) if world.launched() else job.directory
        checkpoint = directory / "dcp"
        saved_state, loaded_state = directory / "saved_state.pt", directory / f"loaded_on_{self.world_size}.pt"
        sides = (("save", save, job.save_takes, SAVE_WORLD_SIZE, saved_state, "save_main"),
                 ("load", load, job.load_sharded_takes, self.world_size, loaded_state, "load_main"))
        for side, project, takes, world_size, gathered, function in sides:
            ranks.run_ranks(
                reshard_ranks.__name__,
                reshard_ranks.ReshardJob(factory=factory, config_blob=config_blob, project=project,
                                         takes=tuple(sorted(takes)), seed=job.seed, world_size=world_size,
                                         checkpoint_dir=str(checkpoint), gathered_path=str(gathered)),
                directory / f"{side}-ranks", timeout=job.fsdp_timeout, world_size=world_size,
                function=function, label=f"reshard-{self.world_size} ({side} on {world_size})")
        reference, reloaded = api.load_state_dict(saved_state), api.load_state_dict(loaded_state)
        if save is not None and "optimizer" not in job.save_takes:  # the project saves no optimizer state
            reference, reloaded = _weights(reference), _weights(reloaded)
        loaded_with = (describe(job.load_sharded) if job.load_sharded is not None
                       else "dcp.load + set_state_dict")
        return Saved(checkpoint, reference=reference, saved_with=self.saved_with(job), reloaded=reloaded,
                     loaded_with=f"{loaded_with} into fully_shard(model) on {self.world_size} "
                                 f"rank{'s' if self.world_size > 1 else ''}",
                     explain=lambda diff: misplaced_rows(reference, reloaded, sorted(diff.values),
                                                         self.world_size))


def _weights(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from .reshard_ranks import OPTIMIZER

    return {k: v for k, v in state.items() if not k.startswith(f"{OPTIMIZER}.")}


def misplaced_rows(saved: Mapping[str, torch.Tensor], loaded: Mapping[str, torch.Tensor], names: list[str],
                   world_size: int) -> Note | None:
    """The cause when the loaded tensors hold the saved rows in another order (shards put together by
    rank, not by the offsets the checkpoint stores), else ``None``.

    >>> w = torch.arange(8.).reshape(4, 2)
    >>> note = misplaced_rows({"w": w}, {"w": torch.cat([w[2:], w[:2]])}, ["w"], 3)
    >>> print(note.text)
    1 tensor holds the saved rows in another order after loading on 3 ranks (w: rows 0-1 hold saved rows 2-3)
    """
    moved: dict[str, list[int]] = {}
    for name in names:
        order = _row_order(saved.get(name), loaded.get(name))
        if order is not None:
            moved[name] = order
    if not moved:
        return None
    first, order = next(iter(moved.items()))
    start = next(i for i, j in enumerate(order) if i != j)
    end = start
    while end + 1 < len(order) and order[end + 1] == order[end] + 1:
        end += 1
    rows = f"row {start}" if start == end else f"rows {start}-{end}"
    was = f"row {order[start]}" if start == end else f"rows {order[start]}-{order[end]}"
    n = len(moved)
    return Note(
        "reshard",
        f"{n} tensor{'s' if n != 1 else ''} hold{'s' if n == 1 else ''} the saved rows in another order after "
        f"loading on {world_size} rank{'s' if world_size != 1 else ''} ({first}: {rows} hold saved {was})",
        fix="your load puts the shards together in the wrong order: place each shard by the offsets the "
            "checkpoint stores (dcp.load into the sharded model's get_state_dict does), not by rank order",
        names=tuple(moved))


def _row_order(saved: Any, loaded: Any) -> list[int] | None:
    """For each loaded row, the saved row it equals (bitwise), when the rows are a reordering; else None."""
    if not isinstance(saved, torch.Tensor) or not isinstance(loaded, torch.Tensor):
        return None
    if saved.dim() == 0 or saved.shape != loaded.shape or saved.dtype != loaded.dtype or saved.shape[0] < 2:
        return None
    rows = {}
    for i, row in enumerate(saved.reshape(saved.shape[0], -1)):
        rows.setdefault(row.contiguous().numpy().tobytes(), i)
    order = []
    for row in loaded.reshape(loaded.shape[0], -1):
        i = rows.get(row.contiguous().numpy().tobytes())
        if i is None:
            return None
        order.append(i)
    return order if order != list(range(len(order))) and sorted(order) == sorted(set(order)) else None


RESHARD_3 = Reshard(3)
RESHARD_1 = Reshard(1)
