"""``make detection``, trainer part: do ``pc.check_resume_hf`` and ``pc.check_resume_lightning`` catch the
resume bugs of a framework's own trainer, name the right cause first, and pass where the framework resumes
exactly? ckpt-chaos 0.1.8 runs on the same cases beside them.

The cases (``benchmarks/trainers/cases.py``): a tiny Llama ``transformers.Trainer`` (dropout, warm-up,
AdamW; 4 steps an epoch) correct, with ``save_only_model=True``, with ``ignore_data_skip=True``, with a
callback that keeps an EMA it never saves, and with gradient accumulation across the resume point, each
resumed after step 3 (mid-epoch) and 4 (an epoch end); a tiny Lightning run (an MLP, AdamW, a step
schedule) correct and deterministic, resumed mid-epoch from a plain ``DataLoader``, with dropout and a
shuffled loader, and with an EMA callback without ``state_dict``, each at two resume points. A point is
positive when the framework's own resume changes the run there: the reference trains the uninterrupted run
(saving with the framework's own save), resumes a fresh trainer from that checkpoint with the framework's
own resume, and compares every loss, the final weights and the EMA callback's state.

Columns: pytest-ckpt's verdict at each point (one check call per case, both points), its first cause and
whether that is the right one, the case's seconds (both points, in this process); ckpt-chaos 0.1.8 (its
own venv, ``make peers``): ``ckpt-chaos run --modes before --result-file {out}/final.pt`` on the case as
a training command (``trainers/chaos_target.py``: saves after the point with the framework's own save,
resumes as a project does, writes the final weights), every ``before`` kill of the whole run, in fresh
interpreters; it judges only the final file, so a resume bug shows as ``SILENT_DIVERGENCE`` where a kill
leaves a whole checkpoint to resume from. Its counts are pass / hard fail / silent divergence / lost work.

    python benchmarks/trainers_detection.py [--no-peers] [--chaos-points first|all] [--chaos-cases hf:correct,...]
                                            [--only hf,lightning] [--no-readme]

Each ckpt-chaos result is kept in ``results/trainers_detection.json`` as it comes (a fresh interpreter per
kill and resume: minutes a case), and a later run reuses what is there for the same case and point.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE), str(HERE / "trainers")]

import torch  # noqa: E402

import cases  # noqa: E402
import pytest_ckpt as pc  # noqa: E402
from harness import fill_readme  # noqa: E402

MARK_START, MARK_END = "<!-- trainers-detection:start -->", "<!-- trainers-detection:end -->"
KEPT = HERE / "results" / "trainers_detection.json"
PEERS_PYTHON = Path(os.environ.get("PEERS_PYTHON", HERE.parent / ".venv-peers" / "bin" / "python"))
CHAOS_TIMEOUT = 3600


def reference(c: cases.Case) -> dict[int, tuple[bool, str]]:
    out = {}
    for at in c.points:
        with tempfile.TemporaryDirectory() as tmp:
            out[at] = cases.reference(c, at, Path(tmp))
    return out


def ours(c: cases.Case) -> dict:
    check = pc.check_resume_hf if c.framework == "hf" else pc.check_resume_lightning
    start = time.perf_counter()
    try:
        report = check(*cases.run(c).values(), at=c.points)
    except pc.ResumeMismatch as err:
        report = err.report
    seconds = time.perf_counter() - start
    points = {}
    for point in report.points:
        note = point.notes[0] if point.notes else None
        right = note is not None and note.kind in c.kinds and (
            not c.about or note.text.startswith(c.about) or any(n.startswith(c.about) for n in note.names))
        points[point.at] = {"ok": point.ok, "kind": note.kind if note else "", "fix": note.fix if note else "",
                            "right": right, "step": point.first_divergent_step}
    return {"points": points, "seconds": seconds}


def chaos(c: cases.Case, at: int) -> dict:
    binary = PEERS_PYTHON.parent / "ckpt-chaos"
    if not binary.exists():
        return {"error": f"{binary} not found (make peers)"}
    work = Path(tempfile.mkdtemp(prefix="chaos-trainers-"))
    cmd = [str(binary), "run", "--result-file", "{out}/final.pt", "--modes", "before", "--max-points", "40",
           "--jobs", "2", "--timeout", "600", "--work", str(work / "w"), "--",
           str(PEERS_PYTHON), str(HERE / "trainers" / "chaos_target.py"), c.framework, c.name, str(at), "{out}"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHAOS_TIMEOUT,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHAOS_TIMEOUT}s"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = proc.stdout.strip().splitlines()
    found = {k: int(v) for k, v in re.findall(r"\b([A-Z_]+): (\d+)", lines[-1] if lines else "")}
    if not found:
        return {"error": " ".join((proc.stdout + proc.stderr).strip().splitlines()[-1:]) or "no output"}
    return {"counts": found, "seconds": time.perf_counter() - start}


def _chaos(r: dict | None) -> str:
    if r is None:
        return "not run"
    if "error" in r:
        return f"could not run: {r['error'][:80]}"
    n = r["counts"]
    verdict = "flags" if n.get("SILENT_DIVERGENCE", 0) else "passes"
    return (f"{verdict}: {n.get('PASS', 0)} / {n.get('HARD_FAIL', 0)} / {n.get('SILENT_DIVERGENCE', 0)} / "
            f"{n.get('LOST_WORK', 0)}, {r['seconds']:.0f} s")


def table(rows: list[dict], elapsed: float, chaos_points: str) -> str:
    lines = [
        f"Measured by `python benchmarks/trainers_detection.py` on {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, in {elapsed:.0f} s. \"changes the run\": the reference (uninterrupted vs "
        f"resumed by the framework itself). ckpt-chaos: every `before` kill of the whole run, at "
        f"{'the first resume point' if chaos_points == 'first' else 'every resume point'} of the cases it ran on "
        f"(a fresh interpreter per kill and resume: minutes a case); pass / hard fail / silent divergence / lost "
        f"work.",
        "",
        "| case | resume after | changes the run | pytest-ckpt | first cause | right cause first | s (both points) "
        "| ckpt-chaos 0.1.8 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for at in r["case"].points:
            positive, where = r["reference"][at]
            p = r["ours"]["points"][at]
            verdict = "passes" if p["ok"] else f"fails from step {p['step']}"
            cause = f"`{p['kind']}`: {p['fix'][:90]}{'...' if len(p['fix']) > 90 else ''}" if p["kind"] else "-"
            right = ("yes" if p["right"] else "NO") if positive else ("-" if p["ok"] else "FALSE ALARM")
            lines.append(f"| {r['case'].what} | {at} | {'yes (' + where + ')' if positive else 'no'} | {verdict} | "
                         f"{cause} | {right} | {r['ours']['seconds']:.1f} | {_chaos(r['chaos'].get(at))} |")
    points = [(r, at) for r in rows for at in r["case"].points]
    pos = [(r, at) for r, at in points if r["reference"][at][0]]
    neg = [(r, at) for r, at in points if not r["reference"][at][0]]
    detected = sum(not r["ours"]["points"][at]["ok"] for r, at in pos)
    right = sum(r["ours"]["points"][at]["right"] for r, at in pos)
    false = sum(not r["ours"]["points"][at]["ok"] for r, at in neg)
    lines += ["", f"- pytest-ckpt: {detected}/{len(pos)} changed runs detected, {right}/{len(pos)} with the right cause "
                  f"first; {false}/{len(neg)} false alarms (where the framework resumes exactly)."]
    ran = [(r, at) for r, at in points if "counts" in r["chaos"].get(at, {})]
    if ran:
        flagged = lambda r, at: r["chaos"][at]["counts"].get("SILENT_DIVERGENCE", 0) > 0  # noqa: E731
        cp = [(r, at) for r, at in ran if r["reference"][at][0]]
        cn = [(r, at) for r, at in ran if not r["reference"][at][0]]
        lines.append(f"- ckpt-chaos 0.1.8: {sum(flagged(r, at) for r, at in cp)}/{len(cp)} changed runs flagged "
                     f"(silent divergence in the final file; it names no cause), "
                     f"{sum(flagged(r, at) for r, at in cn)}/{len(cn)} false alarms; hard fails are the torn "
                     f"checkpoints `get_last_checkpoint` picks, in every case alike.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-peers", action="store_true", help="skip ckpt-chaos")
    parser.add_argument("--chaos-points", choices=("first", "all"), default="first",
                        help="ckpt-chaos at each case's first resume point only (default) or at both")
    parser.add_argument("--chaos-cases", default="", help="ckpt-chaos on these cases only (framework:name, ...)")
    parser.add_argument("--only", default="hf,lightning", help="frameworks, comma-separated")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = []
    for c in [c for c in cases.CASES if c.framework in args.only.split(",")]:
        row = {"case": c, "reference": reference(c), "ours": ours(c), "chaos": {}}
        for at in c.points:
            p = row["ours"]["points"][at]
            print(f"{c.framework} {c.name} after {at}: changes the run: {row['reference'][at]}; pytest-ckpt: "
                  f"{'ok' if p['ok'] else p['kind']} ({'right' if p['right'] else '-'})", flush=True)
        rows.append(row)
    if not args.no_peers:
        kept = json.loads(KEPT.read_text()) if KEPT.exists() else {}
        chosen = set(args.chaos_cases.split(",")) - {""}
        for row in rows:
            c = row["case"]
            if chosen and f"{c.framework}:{c.name}" not in chosen:
                continue
            for at in c.points[: 1 if args.chaos_points == "first" else None]:
                key = f"{c.framework}:{c.name}:{at}"
                if "counts" not in kept.get(key, {}):
                    kept[key] = chaos(c, at)
                    KEPT.parent.mkdir(exist_ok=True)
                    KEPT.write_text(json.dumps(kept, indent=1))
                row["chaos"][at] = kept[key]
                print(f"{c.framework} {c.name} after {at}: ckpt-chaos {_chaos(row['chaos'][at])}", flush=True)
    text = table(rows, time.perf_counter() - started, args.chaos_points)
    print(text)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "trainers_detection.md").write_text(text + "\n")
    if not args.no_readme:
        fill_readme(MARK_START, MARK_END, text)
    bad = [r for r in rows for at in r["case"].points
           if (r["reference"][at][0] and not r["ours"]["points"][at]["right"])
           or (not r["reference"][at][0] and not r["ours"]["points"][at]["ok"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
