"""``ddp``: every top-level module the run's optimizers train is wrapped in a real
``DistributedDataParallel`` once the run is built, in all three runs: right after ``start``, and in
the resumed run after ``load`` returns (``load`` meets the bare modules: API §4.1).

The gloo group (world size 1, this process) is the one the plugin opens for the test, or one the
project opened already. Names gain ``module.``.
"""

from __future__ import annotations

from typing import Any

from .base import ResumeJob, ResumeSide


def ddp(module: Any) -> Any:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module)


ddp.__qualname__ = ddp.__name__ = "DistributedDataParallel"


class Ddp(ResumeSide):
    def hooks(self, job: ResumeJob) -> dict[str, Any]:
        job.process_group()  # raises VariationUnavailable without torch.distributed
        return {"wrap": ddp}


DDP = Ddp()
