"""``make detection``: the thorough hostile-input fuzz over every format, judged by an independent reader.

Each case damages a pristine checkpoint (a torch zip from ``pc.save`` or ``torch.save``, a legacy
torch file, a safetensors file from ``pc.save`` or the safetensors library, an HF sharded
directory, a transformers ``save_pretrained`` directory, a DCP directory): bytes cut at any offset,
1-4 bytes flipped, a zeroed run, trailing bytes; a zip field set to another value, a record
compressed (or a decompression bomb); a safetensors header field of another JSON type; a file of a
directory removed, torn, or swapped with another step's. Every reader (verify, schema,
load_state_dict, diff) runs under a per-case time limit and an audit hook; the verdicts are judged
against what torch.load, safetensors, dcp.load and from_pretrained read
(:mod:`tests.strategies.fuzz`), and a refusal of a file they read as saved is a false alarm unless
other evidence explains it. pc.save's replacement of 0600 / 0640 files (directly and through a
symlink) is checked for widened modes.

The table goes to stdout, to ``benchmarks/results/fuzz.md``, and into README.md between the
``fuzz:start``/``fuzz:end`` markers.

    python benchmarks/fuzz.py [--cases 800] [--seed 0] [--jobs 2] [--formats dcp,safetensors]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import harness  # noqa: E402

MARK_START, MARK_END = "<!-- fuzz:start -->", "<!-- fuzz:end -->"


def run_format(job: tuple[str, int, int]):
    import torch

    from tests.strategies import fuzz

    torch.set_num_threads(1)
    fmt, cases, seed = job
    rows, problems = fuzz.fuzz((fmt,), cases, seed, keep=3)
    return rows, problems


def main(argv=None) -> int:
    from tests.strategies import corruption, fuzz

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=800, help="damaged checkpoints per format (default 800)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--formats", default=",".join(fuzz.FORMATS))
    args = parser.parse_args(argv)
    formats = args.formats.split(",")
    jobs = [(f, args.cases, args.seed) for f in formats]

    start = time.perf_counter()
    results = harness.map_jobs(run_format, jobs, args.jobs)
    with tempfile.TemporaryDirectory() as tmp:
        widened = fuzz.modes_widened(Path(tmp))
    elapsed = time.perf_counter() - start

    rows, problems = {}, []
    for r, p in results:
        for key, counts in r.items():
            rows.setdefault(key, type(counts)()).update(counts)
        problems += p
    total = sum(sum(c[k] for k in fuzz.OUTCOMES) for key, c in rows.items() if key[0] != "explained")
    text = [
        f"Hostile-input fuzz: {total} damaged checkpoints over {len(formats)} formats (bytes cut at any "
        f"offset, 1-4 flipped, a zeroed run, trailing bytes; a zip field set to another value, a record "
        f"compressed or a bomb; a safetensors header field of another JSON type; a directory's file "
        f"removed, torn or swapped with another step's), each judged by torch.load / safetensors / "
        f"dcp.load / from_pretrained; per-case limit {corruption.LIMIT} s per reader; "
        f"seed {args.seed}, {elapsed:.0f} s on {args.jobs} {'process' if args.jobs == 1 else 'processes'}.",
        "",
        *fuzz.table(rows, widened),
    ]
    harness.publish("fuzz", MARK_START, MARK_END, "\n".join(text) + "\n", problems, "problem")
    bad = sum(c[k] for key, c in rows.items() if key[0] != "explained" for k in fuzz.BAD)
    return 0 if not bad and not widened else 1


if __name__ == "__main__":
    sys.exit(main())
