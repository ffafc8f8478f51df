"""``make bench``: every target of issues 6 and 12 beside its limit and its peers, into benchmarks/results/.

Each target module's ``run(work, rounds)`` returns rows; times are medians of
interleaved rounds (peers and ours alternate), memory comes from /proc. The
1-min load average is recorded before and after each target; a target with a row
that misses its goal is run once more before it is reported, and a row that
still misses says the load it was measured under. The table is written to
``results/bench.md`` and copied into README.md between the
``bench:start``/``bench:end`` markers.

    python benchmarks/run.py [--only values,names] [--keep]

``--only`` prints its rows and leaves results/ and README.md as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

#: module -> interleaved rounds; the order matters: values.py writes the file torch_schema.py reads
TARGETS = {"llama70b": 7, "torch_schema": 5, "values": 5, "roundtrip": 3, "startup": 20, "names": 5,
           "resume_speed": 3, "resume_trainers_speed": 5, "ranks": 1}
RESULTS = harness.HERE / "results"
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"


def table(rows: list[harness.Row]) -> str:
    lines = ["| # | measure | pytest-ckpt | target | met | peers (same run) | notes | load |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: ""}[r.met]
        if r.met is False and r.load:
            met += f" (measured under load {max(r.load):.1f})"
        limit = "" if r.limit is None else f"≤ {harness.fmt(r.limit, r.unit)}"
        peers = "; ".join(f"{k}: {v}" for k, v in r.peers.items())
        notes = "; ".join(x for x in (r.note, f"range {r.spread}" if r.spread else "") if x)
        load = f"{r.load[0]:.1f} → {r.load[1]:.1f}" if r.load else ""
        lines.append(f"| {r.target} | {r.measure} | {harness.fmt(r.value, r.unit)} | {limit} | {met} | {peers} | {notes} | {load} |")
    return "\n".join(lines)


def measure(name: str, work: Path) -> list[harness.Row]:
    """The rows of target module ``name``, each with the load average before and after it ran."""
    before = os.getloadavg()[0]
    module = __import__(name)
    try:
        got = module.run(work, TARGETS[name])
    except Exception as e:  # one target failing still reports the others
        got = [harness.Row(name, "did not run", float("nan"), "", note=f"{type(e).__name__}: {str(e)[-300:]}")]
    load = (before, os.getloadavg()[0])
    for r in got:
        r.load = load
    return got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated target modules")
    parser.add_argument("--keep", action="store_true", help="keep the temporary files")
    args = parser.parse_args()
    only = [m for m in args.only.split(",") if m] or list(TARGETS)
    if "torch_schema" in only and "values" not in only:
        only.insert(0, "values")
    only.sort(key=lambda m: (m != "values", list(TARGETS).index(m)))  # values writes the shared 2 GiB file

    work = Path(tempfile.mkdtemp(prefix="ckpt-bench-"))
    if harness.free_disk_gb(work) < 5:
        print(f"need 5 GB free in {work.parent} for the 2 GiB checkpoint", file=sys.stderr)
        return 2
    rows: list[harness.Row] = []
    started = time.perf_counter()
    try:
        for name in only:
            t = time.perf_counter()
            got = measure(name, work)
            missed = [r.measure for r in got if r.met is False]
            if missed:  # a shared machine's slow spell is no verdict: once more before reporting it
                print(f"[{name}: missed {'; '.join(missed)} under load {max(got[0].load):.1f}; once more]",
                      file=sys.stderr)
                got = measure(name, work)
            rows += got
            print(f"[{name}: {time.perf_counter() - t:.0f} s, load {got[0].load[0]:.1f} → {got[0].load[1]:.1f}]",
                  file=sys.stderr)
            for r in got:
                print(f"  {r.measure}: {harness.fmt(r.value, r.unit)}"
                      + (f" (target {harness.fmt(r.limit, r.unit)}: {'met' if r.met else 'MISSED'})" if r.limit else "")
                      + "".join(f"; {k}: {v}" for k, v in r.peers.items()))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    rows.sort(key=lambda r: r.target)
    md = table(rows)
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "python": platform.python_version(),
        "torch": __import__("torch").__version__,
        "seconds": round(time.perf_counter() - started, 1),
        "modules": only,
    }
    if args.only:  # a partial run must not replace the full table
        print(md)
        print("(--only: results/ and README.md left as they are)", file=sys.stderr)
        return 0
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench.json").write_text(json.dumps({**meta, "rows": [r.to_dict() for r in rows]}, indent=1))
    header = (f"Measured by `make bench` on {meta['machine']} (shared; 1-min load average at the end), "
              f"Python {meta['python']}, torch {meta['torch']}; medians of interleaved rounds, "
              f"memory from /proc, in {meta['seconds']:.0f} s. The load column: the 1-min load average "
              f"before and after each target; a target that missed a goal ran once more, and what it "
              f"reports is that second run.\n\n")
    (RESULTS / "bench.md").write_text(header + md + "\n")
    harness.fill_readme(MARK_START, MARK_END, header + md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
