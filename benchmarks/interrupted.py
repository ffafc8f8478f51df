"""The ``interrupted`` variation on real writers, beside ckpt-chaos 0.1.8 on the same writers.

    python benchmarks/interrupted.py [--no-peers] [--only NAME,...] [--no-readme]

For each writer of ``interrupted_writers.WRITERS``: the variation's outcome counts and seconds
(its child process, the kills, the project's loads), then ckpt-chaos's (``ckpt-chaos run --modes
before,torn --jobs 2`` on a two-step training that saves with that writer and resumes from what it
finds; its own verdicts). The table goes to ``results/interrupted.md`` and to README.md between
the ``interrupted:start``/``interrupted:end`` markers (unless ``--no-readme``).

What differs by design: the variation kills the save that overwrites a complete checkpoint (the
first save of a run has nothing to lose); ckpt-chaos kills every file event of the whole run, the
first save and the result file included, and judges the resumed run's final weights.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import torch  # noqa: E402

from harness import fill_readme  # noqa: E402
from interrupted_writers import WRITERS  # noqa: E402

MARK_START, MARK_END = "<!-- interrupted:start -->", "<!-- interrupted:end -->"
PEERS_PYTHON = Path(os.environ.get("PEERS_PYTHON", HERE.parent / ".venv-peers" / "bin" / "python"))
CHAOS_TIMEOUT = 1800


def run_variation(name: str) -> dict:
    from pytest_ckpt.checks.variations.base import SaveJob
    from pytest_ckpt.checks.variations.interrupted import INTERRUPTED, InterruptedMismatch

    writer = WRITERS[name]
    writer.factory()  # the test process has built its model before: its imports are not the variation's
    with tempfile.TemporaryDirectory() as tmp:
        job = SaveJob("interrupted", writer.factory, save=writer.save, directory=Path(tmp))
        start = time.perf_counter()
        try:
            report = INTERRUPTED.check(job, writer.load, loaded_with=writer.load.__name__)
        except InterruptedMismatch as exc:
            report = exc.report
        seconds = time.perf_counter() - start
    first = next((o.where for o in report.failures()), "")
    return {"counts": report.counts(), "seconds": seconds, "first": first, "text": str(report)}


def run_chaos(name: str) -> dict:
    chaos = PEERS_PYTHON.parent / "ckpt-chaos"
    if not chaos.exists():
        return {"error": f"{chaos} not found (make peers)"}
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    cmd = [str(chaos), "run", "--result-file", "{out}/final.pt", "--modes", "before,torn", "--jobs", "2",
           "--timeout", "300", "--work", str(work / "w"), "--",
           str(PEERS_PYTHON), str(HERE / "interrupted_writers.py"), name, "{out}"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=CHAOS_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHAOS_TIMEOUT}s"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - start
    found = dict((k, int(v)) for k, v in re.findall(r"\b([A-Z_]+): (\d+)", proc.stdout.splitlines()[-1]
                                                      if proc.stdout.strip() else ""))
    if not found:
        return {"error": (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]}
    return {"counts": found, "seconds": seconds}


def _ours(r: dict) -> str:
    c = r["counts"]
    return f"{c['pass']} / {c['hard fail']} / {c['silent divergence']} / {c['lost work']}"


def _theirs(r: dict | None) -> str:
    if r is None:
        return "not run"
    if "error" in r:
        return f"could not run: {r['error']}"
    c = r["counts"]
    return (f"{c.get('PASS', 0)} / {c.get('HARD_FAIL', 0)} / {c.get('SILENT_DIVERGENCE', 0)} / "
            f"{c.get('LOST_WORK', 0)} / {r['seconds']:.1f}")


def table(ours: dict, theirs: dict, load: tuple[float, float]) -> str:
    lines = [
        f"Measured by `python benchmarks/interrupted.py` on {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} (1-min load average {load[0]:.1f} at the start, {load[1]:.1f} at the end). "
        "Counts: pass / hard fail / silent divergence / lost work.",
        "",
        "| writer (save / load) | pytest-ckpt `interrupted` | s | first failing boundary | ckpt-chaos 0.1.8 (whole run) / s |",
        "|---|---|---|---|---|",
    ]
    for name, r in ours.items():
        writer = WRITERS[name]
        lines.append(f"| {writer.label} | {_ours(r)} | {r['seconds']:.1f} | {r['first'] or '-'} | "
                     f"{_theirs(theirs.get(name))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-peers", action="store_true", help="skip ckpt-chaos")
    parser.add_argument("--only", default="", help="comma-separated writer names")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    names = [n for n in (args.only.split(",") if args.only else WRITERS)]
    load_at_start = os.getloadavg()[0]  # the seconds are wall time: a busy machine shows here
    ours, theirs = {}, {}
    for name in names:
        ours[name] = run_variation(name)
        print(f"{name}: {_ours(ours[name])} in {ours[name]['seconds']:.1f}s", flush=True)
        print("    " + ours[name]["text"].replace("\n", "\n    "), flush=True)
    if not args.no_peers:
        for name in names:
            theirs[name] = run_chaos(name)
            print(f"{name}: ckpt-chaos {_theirs(theirs[name])}", flush=True)
    text = table(ours, theirs, (load_at_start, os.getloadavg()[0]))
    print(text)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "interrupted.md").write_text(text + "\n")
    if not args.no_readme:
        fill_readme(MARK_START, MARK_END, text)


if __name__ == "__main__":
    main()
