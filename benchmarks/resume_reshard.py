"""``fsdp-reshard-3`` and ``fsdp-reshard-1`` on tiny GPT-2 and Llama, a model with odd sizes, buffers and
a tied pair, and one with a 0-dim parameter (FSDP2 cannot shard it: a skip with the reason). Prints one
row per case: outcome and seconds (the first case includes the rank workers' start).

    python benchmarks/resume_reshard.py
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import resume_reshard_loops as L  # noqa: E402

from pytest_ckpt.errors import ResumeMismatch, ResumeUnavailable  # noqa: E402
from pytest_ckpt.plugin.variations.registry import VariationUnavailable  # noqa: E402
from pytest_ckpt.plugin.resume_variations.base import ResumeJob  # noqa: E402
from pytest_ckpt.plugin.resume_variations.fsdp_reshard import FSDP_RESHARD_1, FSDP_RESHARD_3  # noqa: E402

CASES = [("gpt2", L.gpt2, L.lm_step), ("llama (tied head)", L.llama, L.lm_step), ("odd sizes, tied, buffer", L.odd,
         L.odd_step), ("0-dim parameter", L.odd_scalar, L.odd_step)]


def main() -> int:
    warnings.simplefilter("ignore")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, start, step in CASES:
            for variation in (FSDP_RESHARD_3, FSDP_RESHARD_1):
                job = ResumeJob("fsdp-reshard", start, step, L.save, L.load, steps=4, at=2,
                                workdir=Path(tmp) / f"{start.__name__}-{variation.world_size}")
                began = time.perf_counter()
                try:
                    outcome = str(variation.check(job)).splitlines()[0]
                except (ResumeUnavailable, VariationUnavailable) as exc:
                    outcome = f"skipped: {exc}"
                except ResumeMismatch as exc:
                    outcome, failures = f"FAILED: {exc}", failures + 1
                print(f"| {name} | 2 -> {variation.world_size} | {time.perf_counter() - began:.2f} s | {outcome} |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
