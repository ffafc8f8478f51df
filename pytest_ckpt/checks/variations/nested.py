"""``nested``: a realistic training state, saved after one real optimizer step.

``{"epoch", "step", "trainer": {"var_wo_ddp": weights}, "optimizer", "scheduler", "rng"}``:
the default load has to find the weights inside it.
"""

from __future__ import annotations

import torch

from .base import SaveJob, Saved, SaveSide, perturb, train_one_step
from .registry import VariationUnavailable


class Nested(SaveSide):
    default_save = 'torch.save({"epoch", "step", "trainer": {"var_wo_ddp": ...}, "optimizer", ...})'

    def produce(self, job: SaveJob) -> Saved:
        if job.save is not None and "optimizer" not in job.save_takes:
            # the project's save decides the file's layout: without the optimizer to write,
            # this would be `plain` again, after one step
            raise VariationUnavailable(
                "your save writes its own layout and takes no optimizer=, so this would only "
                "repeat plain; let save take optimizer= (and write it) to check a training state"
            )
        model = job.build()
        perturb(model, job.seed)
        optimizer, scheduler = train_one_step(model)
        path = job.directory / f"model{self.suffix}"
        if job.save is not None:
            job.call_save(model, path, optimizer=optimizer)
        else:
            torch.save(
                {
                    "epoch": 3,
                    "step": 1,
                    "trainer": {"var_wo_ddp": model.state_dict()},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                },
                path,
            )
        return Saved(path, reference=model, saved_with=self.saved_with(job))


NESTED = Nested()
