"""The registry of resume variations: the settings a training run really has, each run by the resume check.

Torch-free, so the plugin can validate ``@pytest.mark.ckpt_resume`` arguments at collection time;
each variation's code lives in its own module and is imported on first use.

>>> from pytest_ckpt.plugin.resume_variations import RESUME_DEFAULT, RESUME_VARIATIONS
>>> RESUME_DEFAULT
('plain', 'compile', 'ddp', 'fresh-process')
>>> RESUME_VARIATIONS["fresh-process"].summary
'the resumed half in a new Python process'
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ResumeVariation:
    """One way of running the project's training; ``impl`` is ``"module:attr"``, imported lazily.

    ``catches``: what a failure under this variation (and not under ``plain``) points at.
    """

    name: str
    summary: str
    catches: str
    impl: str

    def load(self):
        """The implementation object (see :class:`pytest_ckpt.plugin.resume_variations.base.ResumeSide`)."""
        module, _, attr = self.impl.partition(":")
        return getattr(importlib.import_module(module), attr)


def _v(name: str, summary: str, catches: str, impl: str) -> ResumeVariation:
    return ResumeVariation(name, summary, catches, f"pytest_ckpt.plugin.resume_variations.{impl}")


_ALL = (
    _v("plain", "the run as start builds it",
       "state the checkpoint does not carry, or load does not restore", "plain:PLAIN"),
    _v("compile", "every trained top-level module wrapped in torch.compile",
       "a save or load that breaks on torch.compile's _orig_mod. names", "compile:COMPILE"),
    _v("ddp", "every trained top-level module wrapped in DistributedDataParallel (gloo)",
       "a save or load that breaks on DDP's module. names", "ddp:DDP"),
    _v("fresh-process", "the resumed half in a new Python process",
       "a resume that works only because this process still holds the state (module globals, caches)",
       "fresh_process:FRESH_PROCESS"),
    _v("fsdp", "FSDP2 fully_shard on 2 processes, each rank checked",
       "a save or load that loses a rank's shards of weights or optimizer state", "fsdp:FSDP"),
)

#: every resume variation, by exact name, in the documented order
RESUME_VARIATIONS: dict[str, ResumeVariation] = {v.name: v for v in _ALL}
#: what ``@pytest.mark.ckpt_resume()`` runs: all but fsdp (two processes; for projects that shard)
RESUME_DEFAULT: tuple[str, ...] = ("plain", "compile", "ddp", "fresh-process")
