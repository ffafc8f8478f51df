"""``nested``: a realistic training state, saved after one real optimizer step.

``{"epoch", "step", "trainer": {"var_wo_ddp": weights}, "optimizer", "scheduler", "rng"}``:
the default load has to find the weights inside it.
"""

from __future__ import annotations

import torch

from .base import SaveJob, Saved, SaveSide, perturb


class Nested(SaveSide):
    default_save = 'torch.save({"epoch", "step", "trainer": {"var_wo_ddp": ...}, "optimizer", ...})'

    def produce(self, job: SaveJob) -> Saved:
        model = job.build()
        perturb(model, job.seed)
        optimizer, scheduler = train_one_step(model)
        path = job.directory / f"model{self.suffix}"
        if job.save is not None:
            job.save(model, path)
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


def train_one_step(model: torch.nn.Module):
    """One AdamW step on a loss of the weights themselves (needs no inputs), then a scheduler step."""
    params = [p for p in model.parameters() if p.requires_grad and p.is_floating_point()]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    if params:
        loss = sum((p.float() ** 2).sum() for p in params)
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return optimizer, scheduler


NESTED = Nested()
