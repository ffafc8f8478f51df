"""The registry of resume variations: the settings a training run really has, each run by the resume check.

Torch-free, so the plugin can validate ``@pytest.mark.ckpt_resume`` arguments at collection time;
each variation's code lives in its own module and is imported on first use.

>>> from pytest_ckpt.checks.resume_variations import RESUME_DEFAULT, RESUME_VARIATIONS
>>> RESUME_DEFAULT
('plain', 'compile', 'ddp', 'fresh-process')
>>> RESUME_VARIATIONS["fresh-process"].summary
'the resumed half in a new Python process'
"""

from __future__ import annotations

from ..variations.registry import Variation

def _v(name: str, summary: str, impl: str) -> Variation:
    return Variation(name, summary, f"pytest_ckpt.checks.resume_variations.{impl}")


# each comment: what a failure under this variation, and not under plain, points at (docs/resume.md)
_ALL = (
    # state the checkpoint does not carry, or load does not restore
    _v("plain", "the run as start builds it", "plain:PLAIN"),
    # a save or load that breaks on torch.compile's _orig_mod. names
    _v("compile", "every trained top-level module wrapped in torch.compile", "compile:COMPILE"),
    # a save or load that breaks on DDP's module. names
    _v("ddp", "every trained top-level module wrapped in DistributedDataParallel (gloo)", "ddp:DDP"),
    # a resume that works only because this process still holds the state (module globals, caches)
    _v("fresh-process", "the resumed half in a new Python process", "fresh_process:FRESH_PROCESS"),
    # a save or load that loses a rank's shards of weights or optimizer state
    _v("fsdp", "FSDP2 fully_shard on 2 processes, each rank checked", "fsdp:FSDP"),
    # a data position stored per rank, or a load that cannot reshard: resumed on another world size
    _v("fsdp-reshard-3", "saved on 2 FSDP2 ranks, resumed on 3", "fsdp_reshard:FSDP_RESHARD_3"),
    _v("fsdp-reshard-1", "saved on 2 FSDP2 ranks, resumed on 1", "fsdp_reshard:FSDP_RESHARD_1"),
)

#: every resume variation, by exact name, in the documented order
RESUME_VARIATIONS: dict[str, Variation] = {v.name: v for v in _ALL}
#: what ``@pytest.mark.ckpt_resume()`` runs: all but fsdp (two processes; for projects that shard)
RESUME_DEFAULT: tuple[str, ...] = ("plain", "compile", "ddp", "fresh-process")
