"""``fsdp-reshard-3`` and ``fsdp-reshard-1`` on tiny GPT-2 and Llama, a model with odd sizes, buffers and
a tied pair, and one with a 0-dim parameter (FSDP2 cannot shard it: a skip with the reason); and GPT-2
with its data position kept per rank, which must fail with ``resume-data``. Prints one row per case:
outcome and seconds (the first case includes the rank workers' start); exits 1 on a wrong verdict.

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
from pytest_ckpt.checks.variations.registry import VariationUnavailable  # noqa: E402
from pytest_ckpt.checks.resume_variations.base import ResumeJob  # noqa: E402
from pytest_ckpt.checks.resume_variations.fsdp_reshard import FSDP_RESHARD_1, FSDP_RESHARD_3  # noqa: E402

#: name, start, step, whether the check must fail (a data position kept per rank)
CASES = [("gpt2", L.gpt2, L.lm_step, False), ("llama (tied head)", L.llama, L.lm_step, False),
         ("odd sizes, tied, buffer", L.odd, L.odd_step, False), ("0-dim parameter", L.odd_scalar, L.odd_step, False),
         ("gpt2, position kept per rank", L.gpt2, L.lm_step_per_rank, True)]


def main() -> int:
    warnings.simplefilter("ignore")
    wrong = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, start, step, fails in CASES:
            for variation in (FSDP_RESHARD_3, FSDP_RESHARD_1):
                job = ResumeJob("fsdp-reshard", start, step, L.save, L.load, steps=4, at=2,
                                workdir=Path(tmp) / f"{step.__name__}-{start.__name__}-{variation.world_size}")
                began = time.perf_counter()
                try:
                    outcome = str(variation.check(job)).splitlines()[0]
                    wrong += fails
                except (ResumeUnavailable, VariationUnavailable) as exc:
                    outcome = f"skipped: {exc}"
                except ResumeMismatch as exc:
                    outcome = f"failed: {exc.report.notes[0].kind} {exc.report.notes[0].text}"
                    wrong += not fails
                print(f"| {name} | 2 -> {variation.world_size} | {time.perf_counter() - began:.2f} s | {outcome} |")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
