"""``make detection``, resume part: does ``pc.check_resume`` catch real resume bugs, name the
right piece of state, and stay quiet on correct loops? The peers run on the same cases in
the same run, measured the same way.

The loops (``benchmarks/resume/loops.py``) are three families of real training code: an MLP
with dropout, AdamW, warm-up, a resumable shuffled loader, numpy and python augmentation
and a dict EMA; a tiny transformers GPT-2 with AdamW and warm-up and a length curriculum;
a loop with fp16 autocast and ``torch.amp.GradScaler``. Each has a correct save/load and
the injected bug classes of issue 12. A reference checker (``resume/reference.py``)
decides, per resume point, whether a bug changes the run at all there (data position
restarting at an epoch end changes nothing): a *positive* case changes it, a *negative*
(a correct loop, or a bug where it provably changes nothing) must not be flagged.

Columns:
- pytest-ckpt over every resume point of every family (first step, mid-epoch, right
  before an epoch boundary, at the boundary, right before a scheduler milestone), in one
  ``pc.check_resume(at=(...))`` per loop;
- pytest-ckpt, pytest-torch 1.1.1 (``assert_resume_equivalent``, with everything it can
  compare declared), TrainParity 0.1.0's public ``check_resume`` and its shipped, unexported
  ``ResumeRunner`` on the same cases: one resume point per (family, bug), the one where the
  bug shows in the losses if it ever does, plus each correct loop.

Every tool runs in-process: pytest-ckpt in this process, each peer in a long-lived worker in
its own venv (``make peers``, ``PEERS_PYTHON``; ``resume/peers.py``), never in ours; each
times only its check call, the tools taking each case in turn. Unless ``--no-fresh``, each
tool's correct loops also run in a fresh interpreter, timed whole, for the seconds table.

    python benchmarks/resume_detection.py [--no-peers] [--families mlp,gpt2,amp] [--bugs a,b] [--no-fresh] [--from-json]
    python benchmarks/resume_detection.py --one mlp optimizer-not-loaded 3    # one pytest-ckpt case, as JSON

A filtered run (``--families`` short of all, ``--bugs``) leaves README.md and
results/resume_detection.{json,md} alone: it writes results/resume_detection.subset.json and
prints its tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks" / "resume"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import loops  # noqa: E402
import torch  # noqa: E402

import pytest_ckpt as pc  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MARK_START, MARK_END = "<!-- resume-detection:start -->", "<!-- resume-detection:end -->"
PEERS = ("pytest-torch", "trainparity", "trainparity-runner")

#: the cause a report must lead with, per bug class (pytest-ckpt's note kinds)
KINDS: dict[str, set[str]] = {
    "optimizer-not-saved": {"resume-optimizer"},
    "optimizer-not-loaded": {"resume-optimizer"},
    "scheduler-not-restored": {"resume-scheduler"},
    "scaler-not-restored": {"resume-scaler"},
    "torch-rng-not-restored": {"resume-rng"},
    "python-rng-not-restored": {"resume-rng"},
    "numpy-rng-not-restored": {"resume-rng"},
    "data-position-restarts": {"resume-data"},
    # the loader's shuffle generator is an RNG stream the run holds, and the data it reshuffles
    "data-generator-not-restored": {"resume-rng", "resume-data"},
    # the loader's state_dict() is in the checkpoint and not loaded: the loader is named, not its generator
    "loader-not-restored": {"resume-data"},
    "counter-not-restored": {"resume-counter"},
    "weights-before-last-step": {"resume-weights"},
    "strict-false-loads-nothing": {"resume-weights"},
    "ema-not-saved": {"resume-weights"},
}
#: what a peer's report must blame first, in benchmarks/resume/peers.py's vocabulary
COMPONENTS: dict[str, set[str]] = {
    "optimizer-not-saved": {"optimizer"},
    "optimizer-not-loaded": {"optimizer"},
    "scheduler-not-restored": {"scheduler", "lr"},
    "scaler-not-restored": {"scaler"},
    "torch-rng-not-restored": {"rng:torch"},
    "python-rng-not-restored": {"rng:python"},
    "numpy-rng-not-restored": {"rng:numpy"},
    "data-position-restarts": {"data"},
    "data-generator-not-restored": {"data"},
    "loader-not-restored": {"data"},
    "counter-not-restored": {"counter"},
    "weights-before-last-step": {"weights"},
    "strict-false-loads-nothing": {"weights"},
    "ema-not-saved": {"ema"},
}
PRIMARY_ORDER = ("mid-epoch", "before-epoch-end", "before-milestone", "epoch-end", "first")


# -- the reference: which (family, bug, point) changes the run ----------------------------------

def reference(families: tuple[str, ...]) -> list[dict[str, Any]]:
    import reference as ref

    out = []
    for family in families:
        for bug in (None,) + loops.BUGS[family]:
            for name, at in loops.resume_points(family).items():
                out.append(ref.check(family, bug, at) | {"point": name})
    return out


def primary_point(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The resume point where the bug shows in the losses, else in the state, in PRIMARY_ORDER."""
    by_point = {r["point"]: r for r in rows}
    for want in (lambda r: r["first_step"] is not None, lambda r: r["detected"], lambda r: True):
        for name in PRIMARY_ORDER:
            if name in by_point and want(by_point[name]):
                return by_point[name]
    raise AssertionError("no resume point")


# -- pytest-ckpt ---------------------------------------------------------------------------------

def ours(family: str, bug: str | None, at: tuple[int, ...]) -> dict[str, Any]:
    """One ``pc.check_resume`` over the given resume points: per point, ok, kinds, first step."""
    start, step, save, load = loops.functions(family)
    steps = loops.FAMILY_INFO[family]["steps"]
    began = time.perf_counter()
    cpu = time.process_time()
    try:
        report = pc.check_resume(start, step, save=save, load=load, steps=steps, at=at,
                                 config=loops.config(family, bug))
    except pc.ResumeMismatch as exc:
        report = exc.report
    except Exception as exc:  # noqa: BLE001 - an error is a result of its own, never a pass
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "points": {},
                "seconds": time.perf_counter() - began}
    points = {p.at: {"ok": p.ok, "kinds": [n.kind for n in p.notes if not getattr(n, "info", False)],
                     "first": p.first_divergent_step,
                     "text": [f"[{n.kind}] {n.text}" for n in p.notes]} for p in report.points}
    return {"points": points, "seconds": time.perf_counter() - began, "cpu_seconds": time.process_time() - cpu,
            "report": str(report)}


def score_ours(ref: dict[str, Any], point: dict[str, Any] | None) -> dict[str, Any]:
    positive = ref["detected"]
    flagged = point is not None and not point["ok"]
    kinds = point["kinds"] if point else []
    expected = KINDS.get(ref["bug"] or "", set())
    return {"positive": positive, "hit": positive and flagged, "false_alarm": (not positive) and flagged,
            "right": positive and flagged and bool(kinds) and kinds[0] in expected,
            "only": positive and flagged and bool(kinds) and set(kinds) <= expected,
            "first": point["first"] if point else None, "ref_first": ref["first_step"]}


# -- the peers -----------------------------------------------------------------------------------

def score_peer(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """A peer's line names every component in it at once: right first when the right one is among them."""
    import peers

    positive = ref["detected"]
    expected = COMPONENTS.get(ref["bug"] or "", set())
    return got | {"positive": positive, "hit": positive and got["detected"],
                  "false_alarm": (not positive) and got["detected"],
                  "right": positive and peers.right_first(got, expected),
                  "first": got.get("first_step"), "ref_first": ref["first_step"]}


def same_cases(cases: list[dict[str, Any]], tools: tuple[str, ...], began: float) -> dict[str, list[dict]]:
    """Each case checked by pytest-ckpt, then by each peer in turn: a busy machine slows them alike."""
    import peers

    same: dict[str, list[dict]] = {"pytest-ckpt": [], **{t: [] for t in tools}}
    with peers.Peers() as workers:
        for c in cases:
            ids = {"family": c["family"], "bug": c["bug"], "at": c["at"]}
            once = ours(c["family"], c["bug"], (c["at"],))
            same["pytest-ckpt"].append(ids | {"seconds": once["seconds"], "error": once.get("error")}
                                       | score_ours(c, once["points"].get(c["at"])))
            for tool in tools:
                got = workers.run(tool, c["family"], c["bug"], c["at"], loops.FAMILY_INFO[c["family"]]["steps"])
                same[tool].append(score_peer(c, got) | ids)
            print(f"  same case {c['family']:4} {str(c['bug']):28} at {c['at']:2}: "
                  + ", ".join(f"{t} {'flagged' if same[t][-1].get('hit') or same[t][-1].get('false_alarm') else 'ok'}"
                              f"{' (no verdict)' if same[t][-1].get('error') else ''}"
                              f" {same[t][-1]['seconds'] or 0:.1f}s" for t in same)
                  + f"  [{time.perf_counter() - began:.0f}s]", flush=True)
    return same


def fresh_seconds(cases: list[dict[str, Any]], tools: tuple[str, ...]) -> dict[str, list[float | None]]:
    """Each tool's check of these cases in a fresh interpreter, timed whole (start, imports, check).

    A peer that gives no verdict there (as in-process: the same reason) has no seconds (None): it
    did not run the whole check. pytest-ckpt failing here is a bug of this benchmark: it raises."""
    import peers

    out: dict[str, list[float | None]] = {tool: [] for tool in tools}
    for c in cases:
        for tool in tools:
            if tool == "pytest-ckpt":
                argv = [sys.executable, str(Path(__file__).resolve()), "--one", c["family"], c["bug"] or "correct",
                        str(c["at"])]
                rc, log, wall, _ = peers.spawn(argv, 300)
                if rc != 0 or '{"error": ' in log:  # --one prints ours(): an error is its first key
                    raise RuntimeError(f"pytest-ckpt in a fresh interpreter failed on {c['family']} {c['bug']}: "
                                       f"{log[-500:]}")
            else:
                got = peers.run_fresh(tool, c["family"], c["bug"], c["at"], loops.FAMILY_INFO[c["family"]]["steps"])
                wall = None if got["error"] else got["seconds"]
            out[tool].append(wall)
        print(f"  fresh interpreter, {c['family']} {c['bug']}: "
              + ", ".join(f"{t} {'no verdict' if out[t][-1] is None else f'{out[t][-1]:.1f}s'}" for t in tools),
              flush=True)
    return out


# -- tables --------------------------------------------------------------------------------------

def _frac(n: int, d: int) -> str:
    return f"{n}/{d}" if d else "-"


def _median(xs: list[float | None]) -> str:
    xs = [x for x in xs if x is not None]
    return f"{statistics.median(xs):.2f}" if xs else "-"


def _seconds(rows: list[dict[str, Any]]) -> list[float]:
    """The seconds of the cases a tool gave a verdict on: a check that stopped early is not timed."""
    return [r["seconds"] for r in rows if not r.get("error")]


def _first(rows: list[dict[str, Any]]) -> str:
    """Of the detected cases whose losses differ, how many are dated to the reference's step."""
    dated = [r for r in rows if r["hit"] and r["ref_first"] is not None]
    return _frac(sum(r.get("first") == r["ref_first"] for r in dated), len(dated))


def _no_verdict(rows: list[dict[str, Any]]) -> str:
    n = sum(bool(r.get("error")) for r in rows)
    return f" ({n} no verdict)" if n else ""


def table(all_points: list[dict], same: dict[str, list[dict]], peers_ran: tuple[str, ...]) -> list[str]:
    bugs = [b for b in loops.BUG_NAMES if any(r["bug"] == b for r in all_points)]
    head = ["bug class", "cases", "pytest-ckpt, every resume point: detected / right cause",
            "pytest-ckpt: detected / right cause / first step / s"]
    head += [f"{p}: detected / right component / first step / s" for p in peers_ran]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for bug in bugs + [None]:
        ap = [r for r in all_points if r["bug"] == bug]
        if bug is None:
            label, n = "correct loops (false alarms)", len([r for r in same["pytest-ckpt"] if r["bug"] is None])
            cells = [f"{sum(r['false_alarm'] for r in ap)} of {len(ap)} flagged"]
            for tool in ("pytest-ckpt", *peers_ran):
                rows = [r for r in same[tool] if r["bug"] is None]
                cells.append(f"{sum(r['false_alarm'] for r in rows)} of {len(rows)} flagged{_no_verdict(rows)}"
                             f" / / / {_median(_seconds(rows))}")
        else:
            pos = [r for r in ap if r["positive"]]
            label = bug
            n = len([r for r in same["pytest-ckpt"] if r["bug"] == bug and r["positive"]])
            cells = [f"{_frac(sum(r['hit'] for r in pos), len(pos))} / {_frac(sum(r['right'] for r in pos), len(pos))}"]
            for tool in ("pytest-ckpt", *peers_ran):
                rows = [r for r in same[tool] if r["bug"] == bug and r["positive"]]
                cells.append(f"{_frac(sum(r['hit'] for r in rows), len(rows))}{_no_verdict(rows)} / "
                             f"{_frac(sum(r['right'] for r in rows), len(rows))} / {_first(rows)} / "
                             f"{_median(_seconds(rows))}")
        lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
    return lines


def totals(all_points: list[dict], same: dict[str, list[dict]]) -> list[str]:
    out = []
    pos = [r for r in all_points if r["positive"]]
    neg = [r for r in all_points if not r["positive"]]
    out.append(f"pytest-ckpt, every resume point: {sum(r['hit'] for r in pos)}/{len(pos)} detected "
               f"({sum(r['right'] for r in pos)} with the right cause first, {sum(r['only'] for r in pos)} "
               f"with no other cause), {sum(r['false_alarm'] for r in neg)}/{len(neg)} false alarms "
               f"(correct loops, and bugs at a point where they change nothing).")
    for name, rows in same.items():
        pos = [r for r in rows if r["positive"]]
        neg = [r for r in rows if not r["positive"]]
        errors = sum(bool(r.get("error")) for r in rows)
        out.append(f"{name}, same cases: {sum(r['hit'] for r in pos)}/{len(pos)} detected, "
                   f"{sum(r['right'] for r in pos)} right {'cause' if name == 'pytest-ckpt' else 'component'} "
                   f"first, {sum(r['false_alarm'] for r in neg)}/{len(neg)} false alarms, "
                   f"median {_median(_seconds(rows))} s a case in-process"
                   + (f", no verdict on {errors}" if errors else "") + ".")
    return out


def seconds_table(same: dict[str, list[dict]], fresh: dict[str, list[float | None]]) -> list[str]:
    """Seconds a case per tool: in-process over every case and over the correct loops, and fresh."""
    lines = ["| tool | in-process, every same case: median s | in-process, the correct loops: median s | "
             "fresh interpreter, the correct loops: median s |", "|---|---:|---:|---:|"]
    for name, rows in same.items():
        correct = _seconds([r for r in rows if r["bug"] is None])
        lines.append(f"| {name} | {_median(_seconds(rows))} | {_median(correct)} | "
                     f"{_median(fresh.get(name, []))} |")
    return lines


def _reasons(rows: list[dict]) -> str:
    """Why a tool gave no verdict, each reason once with its count and families."""
    by: dict[str, list[str]] = {}
    for r in rows:
        if r.get("error"):
            by.setdefault(r["error"], []).append(r["family"])
    return "; ".join(f"{len(fams)} × ({', '.join(sorted(set(fams)))}) {reason}" for reason, fams in by.items())


def notes(same: dict[str, list[dict]], peers_ran: tuple[str, ...], fresh: dict[str, list[float]]) -> list[str]:
    out = ["Right cause (ours) / right component (peers) first: the first cause line of the report blames the "
           "injected bug's component. A line that names several components names all of them at once "
           "(pytest-torch's \"random number generators (python, torch, numpy) not restored\"): it is right "
           "first when the right one is among them. First step: of the detected cases whose losses differ, "
           "those the tool dates to the reference's first differing step (TrainParity's `ResumeRunner` compares "
           "the state right after load and after every step: a state that differs right after load names the "
           "resume point, no step of the run; its `check_resume` compares the final checkpoint only)."]
    if peers_ran:
        out.append("Process model: every tool in-process, timing only its check call, one case at a time: "
                   "pytest-ckpt in the benchmark's process, each peer in a long-lived worker in its own venv "
                   "(torch, transformers, the loops and the tool imported before the first case). TrainParity's "
                   "checks start fresh interpreters themselves, by design (`ResumeRunner`: 4 per case; "
                   "`check_resume`: 4 training commands and a capture after each), and their seconds include them. "
                   "A case a tool gave no verdict on is left out of its seconds."
                   + (" Fresh interpreter: each correct loop checked again in a new process, timed whole "
                      "(interpreter start, imports, check)." if fresh else ""))
    for name in peers_ran:
        reasons = _reasons(same.get(name, []))
        if reasons:
            out.append(f"{name} gave no verdict on: {reasons}.")
    return out


def write_readme(text: str) -> None:
    readme = ROOT / "README.md"
    body = readme.read_text(encoding="utf-8")
    if MARK_START in body and MARK_END in body:
        head, rest = body.split(MARK_START, 1)
        _, tail = rest.split(MARK_END, 1)
        readme.write_text(head + MARK_START + "\n" + text + "\n" + MARK_END + tail, encoding="utf-8")


# -- main ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(loops.FAMILIES))
    parser.add_argument("--bugs", default="",
                        help="only these bug classes (and the correct loops): a quick run, written to "
                             "results/resume_detection.subset.json only")
    parser.add_argument("--no-peers", action="store_true", help="pytest-ckpt only (no peers venv needed)")
    parser.add_argument("--no-fresh", action="store_true", help="skip the fresh-interpreter timings")
    parser.add_argument("--no-readme", action="store_true",
                        help="leave README.md and results/resume_detection.md alone (the raw JSON is still written)")
    parser.add_argument("--from-json", action="store_true",
                        help="render the tables again from results/resume_detection.json, running nothing")
    parser.add_argument("--one", nargs=3, metavar=("FAMILY", "BUG", "AT"),
                        help="run one pytest-ckpt case and print it as JSON (the fresh-interpreter timing)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.one:
        family, bug, at = args.one
        print(json.dumps(ours(family, None if bug == "correct" else bug, (int(at),)), default=str))
        return 0
    if args.from_json:
        raw = json.loads((RESULTS / "resume_detection.json").read_text())
        return render(raw["all_points"], raw["same_cases"], raw["elapsed"], raw["families"],
                      tuple(raw["peers_ran"]), raw.get("fresh", {}), raw.get("load"), readme=not args.no_readme)
    families = tuple(f for f in args.families.split(",") if f)
    if args.bugs:
        wanted = set(args.bugs.split(","))
        loops.BUGS = {f: tuple(b for b in bugs if b in wanted) for f, bugs in loops.BUGS.items()}
    began, load_at_start = time.perf_counter(), os.getloadavg()[0]
    python = os.environ.get("PEERS_PYTHON")
    if not args.no_peers and (not python or not Path(python).exists()):
        print("no peers venv (PEERS_PYTHON): run `make detection`, which builds it, or pass --no-peers")
        return 2

    refs = reference(families)
    print(f"reference: {len(refs)} (family, bug, resume point) cases in {time.perf_counter() - began:.0f}s",
          flush=True)

    all_points: list[dict] = []
    for family in families:
        points = tuple(sorted(set(loops.resume_points(family).values())))
        for bug in (None,) + loops.BUGS[family]:
            rows = [r for r in refs if r["family"] == family and r["bug"] == bug]
            everywhere = ours(family, bug, points)
            for r in rows:
                got = everywhere["points"].get(r["at"])
                all_points.append({"family": family, "bug": bug, "point": r["point"], "at": r["at"],
                                   "error": everywhere.get("error"), "seconds": everywhere["seconds"],
                                   "text": (got or {}).get("text")} | score_ours(r, got))
            flagged = [p for p, v in everywhere["points"].items() if not v["ok"]]
            print(f"  {family:4} {str(bug):28} {everywhere['seconds']:5.1f}s  flagged at {flagged}"
                  + (f"  ERROR {everywhere['error']}" if everywhere.get("error") else ""), flush=True)

    peers_ran: tuple[str, ...] = () if args.no_peers else PEERS
    if peers_ran:
        os.environ["PEERS_PYTHON"] = os.path.abspath(python)  # the peers run in their own directories
    cases = [primary_point([r for r in refs if r["family"] == f and r["bug"] == b])
             for f in families for b in (None,) + loops.BUGS[f]]
    same = same_cases(cases, peers_ran, began)
    fresh = {} if args.no_fresh else fresh_seconds([c for c in cases if c["bug"] is None], ("pytest-ckpt", *peers_ran))

    elapsed = time.perf_counter() - began
    load = [load_at_start, os.getloadavg()[0]]
    RESULTS.mkdir(exist_ok=True)
    # a filtered run (--families, --bugs) never overwrites the full run's results, README or raw JSON
    subset = args.bugs or set(families) != set(loops.FAMILIES)
    # written before the tables: a rendering bug loses no run
    raw = RESULTS / ("resume_detection.subset.json" if subset else "resume_detection.json")
    raw.write_text(json.dumps({"all_points": all_points, "same_cases": same, "elapsed": elapsed,
                               "families": families, "peers_ran": list(peers_ran), "fresh": fresh,
                               "load": load},
                              indent=1, default=str) + "\n")
    return render(all_points, same, elapsed, families, peers_ran, fresh, load,
                  readme=not (args.no_readme or subset))


def render(all_points: list[dict], same: dict[str, list[dict]], elapsed: float, families: list[str],
           peers_ran: tuple[str, ...], fresh: dict[str, list[float]], load: list[float] | None, *,
           readme: bool) -> int:
    import platform

    header = (f"Measured by `make detection` on {platform.machine()}, {os.cpu_count()} cores, "
              f"torch {torch.__version__}, in {elapsed:.0f} s"
              + (f" (1-min load average {load[0]:.1f} at the start, {load[1]:.1f} at the end)" if load else "")
              + f"; {len(families)} loop families, "
              f"{sum(len(loops.BUGS[f]) for f in families)} bug variants of "
              f"{len({b for f in families for b in loops.BUGS[f]})} classes, "
              f"{len({(r['family'], r['point']) for r in all_points})} resume points. Every tool in-process "
              f"(seconds: its check call); peers: "
              + (", ".join(f"{p} (its own venv)" for p in peers_ran) or "not run (--no-peers)") + ".")
    lines = [header, "", *table(all_points, same, peers_ran), "", *(f"- {t}" for t in totals(all_points, same)),
             "", *seconds_table(same, fresh), "", *(f"- {t}" for t in notes(same, peers_ran, fresh))]
    text = "\n".join(lines)
    print("\n" + text)
    if readme:
        (RESULTS / "resume_detection.md").write_text(text + "\n", encoding="utf-8")
        write_readme(text)
    misses = [r for r in all_points if r["positive"] and not r["right"]]
    alarms = [r for r in all_points if r["false_alarm"]]
    for r in misses + alarms:
        print("MISS" if r in misses else "FALSE ALARM", r["family"], r["bug"], r["point"], r.get("text"))
    return 1 if misses or alarms else 0


if __name__ == "__main__":
    sys.exit(main())
