"""``compile``: every top-level module the run's optimizers train is wrapped in ``torch.compile``
(backend: ini ``ckpt_compile_backend``) once the run is built, in all three runs: right after
``start``, and in the resumed run after ``load`` returns (``load`` meets the bare modules: API §4.1).

Its names gain ``_orig_mod.``: a save that writes them and a load that expects the bare names (or
the other way round) part here, while ``plain`` passes.
"""

from __future__ import annotations

from typing import Any, Callable

from .base import ResumeJob, ResumeSide


def compiler(backend: str) -> Callable:
    """``module -> torch.compile(module, backend=backend)``, named for the messages that cite it."""
    def wrap(module: Any) -> Any:
        import torch

        return torch.compile(module, backend=backend)

    wrap.__qualname__ = wrap.__name__ = f"torch.compile(backend={backend!r})"
    return wrap


class Compile(ResumeSide):
    def hooks(self, job: ResumeJob) -> dict[str, Any]:
        return {"wrap": compiler(job.compile_backend)}


COMPILE = Compile()
