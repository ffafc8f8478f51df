"""``make detection``: how much drift the engine catches, measured with the hypothesis strategies.

For each model family (TinyLM, Llama, Qwen2, GPT-2 with tied weights) and each
kind of drift (the eight mutations, mismatched configs, schema-equivalent
configs) it draws ``--cases`` cases and checks them exactly as
``tests/strategies`` does (:mod:`tests.strategies.verdicts`). Each drift case
also diffs an undrifted control along the same route, so "false alarms" counts
ok sources reported as different. Corrupted files are a table of their own: a
refusal of a file torch or safetensors reads as saved is a false alarm there,
unless other evidence explains it (:func:`tests.strategies.corruption.explain`).

The drift tables go to stdout, to ``benchmarks/results/detection.md``, and into
README.md between the ``detection:start``/``detection:end`` markers; the
corrupted-files table to ``benchmarks/results/corrupted.md`` and between the
``corrupted:start``/``corrupted:end`` markers.

    python benchmarks/detection.py [--cases 100] [--seed 0] [--jobs 2] [--only drift|corrupted]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import harness  # noqa: E402

MARK_START, MARK_END = "<!-- detection:start -->", "<!-- detection:end -->"
CORRUPT_START, CORRUPT_END = "<!-- corrupted:start -->", "<!-- corrupted:end -->"
CONFIG_KINDS = ("config-mismatch", "config-equivalent")


def thorough(cases: int):
    """The detection profile: random, many examples, no database, no shrinking (nothing fails)."""
    from hypothesis import HealthCheck, Phase, settings

    return settings(max_examples=cases, deadline=None, database=None, derandomize=False,
                    phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))


def run_job(job: tuple[str, str, int, int]) -> tuple[str, str, Counter, list[str]]:
    """Draw ``cases`` cases of one (family, kind); count outcomes, keep the first failures."""
    import torch
    from hypothesis import given, seed
    from hypothesis.errors import UnsatisfiedAssumption
    from hypothesis import strategies as st

    import pytest_ckpt as pc
    from pytest_ckpt import strategies as cks
    from tests.strategies import corruption, verdicts
    from tests.strategies.families import family, routes_for, write

    torch.set_num_threads(1)
    name, kind, cases, seed_value = job
    counts: Counter = Counter()
    failures: list[str] = []

    def record(detected: bool | None, problem: str | None, false_alarm: bool) -> None:
        counts["cases"] += 1
        counts["detectable"] += detected is not None  # None: the case must come back ok
        counts["detected"] += bool(detected)
        counts["correct"] += problem is None
        counts["false alarms"] += false_alarm
        if problem and len(failures) < 3:
            failures.append(problem)

    def guarded(body):
        def case(data):
            try:
                body(data)
            except UnsatisfiedAssumption:
                raise  # hypothesis discards the draw: not a case
            except Exception:  # a crash is a miss, and the table must still print
                record(False, f"{name}/{kind} raised:\n{traceback.format_exc(limit=4)}", False)
        return case

    if kind in corruption.WRITERS:
        sd = corruption.original()

        def body(data):
            with tempfile.TemporaryDirectory() as tmp:
                pristine = corruption.write(kind, sd, Path(tmp) / "ckpt")
                blob = pristine.read_bytes()
                c = data.draw(corruption.corruptions(len(blob)))
                pristine.write_bytes(c.apply(blob))
                out = corruption.read_back(pristine, sd)
                refused = isinstance(out["load_state_dict"], pc.CheckpointError)
                # "detected": refused, or read back as different; an ok diff must be harmless bytes
                changed = refused or not out["diff"].ok
                problem = corruption.judge(c, out, sd, checksummed=kind in corruption.CHECKSUMMED)
                why = None
                if problem is None and corruption.refused_intact(out, sd):
                    why = corruption.explain(pristine, {pristine.name: blob}, sd)
                    counts["explained" if why else "false refusals"] += 1
                    if not why:
                        problem = f"{kind} {c!r}: refused, yet torch reads it as saved"
            record(changed, problem, False)
    elif kind == "config-mismatch":
        fam = family(name)

        def body(data):
            pair = data.draw(cks.mismatched_configs(fam.base, fam.factory))
            a, b = pair
            d = pc.diff(fam.meta(a), fam.meta(b), configs=(a, b))
            control = pc.diff(fam.meta(a), fam.meta(a), configs=(a, a))
            record(not d.ok, verdicts.mismatch(pair, d), not control.ok)
    elif kind == "config-equivalent":
        fam = family(name)

        def body(data):
            a = data.draw(cks.configs(fam.base))
            b = data.draw(verdicts.equivalent(fam, a))
            with tempfile.TemporaryDirectory() as tmp:
                problem = verdicts.equivalence(fam, a, b, data.draw(st.integers(0, 2**16)), Path(tmp))
            record(None, problem, problem is not None)
    else:
        fam = family(name)

        def body(data):
            cfg = data.draw(cks.configs(fam.base))
            model = fam.build(cfg, seed=data.draw(st.integers(0, 2**16)))
            sd = model.state_dict()
            m = data.draw(cks.mutations(sd, kinds=(kind,)))
            route = data.draw(st.sampled_from(routes_for(kind)))
            with tempfile.TemporaryDirectory() as tmp:
                d = pc.diff(model, write(route, m.state_dict, Path(tmp), config=cfg))
            with tempfile.TemporaryDirectory() as tmp:
                control = pc.diff(model, write(route, sd, Path(tmp), config=cfg))
            problem = verdicts.drift(m, d, stored_config=route.startswith("pc.save"))
            record(None if m.undone else not d.ok, problem, not control.ok or m.undone and not d.ok)

    test = seed(seed_value)(thorough(cases)(given(st.data())(guarded(body))))
    test()
    return name, kind, counts, failures


# -- tables -----------------------------------------------------------------------------------

def _pct(n: int, total: int) -> str:
    return f"{n}/{total} ({100 * n / total:.0f}%)" if total else "-"


def table(first: str, rows: dict[str, Counter]) -> list[str]:
    lines = [f"| {first} | cases | detected | correct cause | false alarms |", "|---|---:|---:|---:|---:|"]
    total = Counter()
    for key, c in rows.items():
        total.update(c)
        detected = _pct(c["detected"], c["detectable"]) if c["detectable"] else "n/a: ok by design"
        lines.append(f"| {key} | {c['cases']} | {detected} | {_pct(c['correct'], c['cases'])} "
                     f"| {c['false alarms']} |")
    lines.append(f"| **all** | **{total['cases']}** | **{_pct(total['detected'], total['detectable'])}** "
                 f"| **{_pct(total['correct'], total['cases'])}** | **{total['false alarms']}** |")
    return lines


def corruption_table(rows: dict[str, Counter]) -> list[str]:
    lines = ["| writer | cases | refused or reported | refused, torch reads it as saved: explained | false alarms "
             "| correct (result or CheckpointError naming the file) |",
             "|---|---:|---:|---:|---:|---:|"]
    for key, c in rows.items():
        lines.append(f"| {key} | {c['cases']} | {_pct(c['detected'], c['cases'])} | {c['explained']} "
                     f"| {c['false refusals']} | {_pct(c['correct'], c['cases'])} |")
    return lines


def main(argv=None) -> int:
    from pytest_ckpt.strategies import MUTATION_KINDS
    from tests.strategies import corruption
    from tests.strategies.families import FAMILY_NAMES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100, help="cases per family and kind (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--families", default=",".join(FAMILY_NAMES))
    parser.add_argument("--only", choices=("drift", "corrupted"), help="run one part (default: both)")
    args = parser.parse_args(argv)
    families = args.families.split(",")
    kinds = (*MUTATION_KINDS, *CONFIG_KINDS)
    jobs = []
    if args.only != "corrupted":
        jobs += [(f, k, args.cases, args.seed) for k in kinds for f in families]
    if args.only != "drift":
        jobs += [("files", w, args.cases, args.seed) for w in corruption.WRITERS]

    start = time.perf_counter()
    results = harness.map_jobs(run_job, jobs, args.jobs)
    elapsed = time.perf_counter() - start

    by_kind: dict[str, Counter] = {k: Counter() for k in kinds}
    by_family: dict[str, Counter] = {f: Counter() for f in families}
    by_writer: dict[str, Counter] = {}
    failures: list[str] = []
    file_failures: list[str] = []
    for name, kind, counts, fails in results:
        if name == "files":
            by_writer[kind] = counts
            file_failures += fails
            continue
        failures += fails
        by_kind[kind].update(counts)
        by_family[name].update(counts)

    took = f"seed {args.seed}, {elapsed:.0f} s on {args.jobs} {'process' if args.jobs == 1 else 'processes'}"
    if args.only != "corrupted":
        drift_cases = sum(c["cases"] for c in by_kind.values())
        text = [
            f"Detection power: {drift_cases} drawn drift and config cases over "
            f"{len(families)} model families; {took}.",
            "",
            "By kind of drift (prefix, nest and schema-equivalent configs must come back ok: "
            "every one that does not is a false alarm):",
            "",
            *table("drift", by_kind),
            "",
            "By model family:",
            "",
            *table("family", by_family),
        ]
        harness.publish("detection", MARK_START, MARK_END, "\n".join(text) + "\n", failures)
    if args.only != "drift":
        file_cases = sum(c["cases"] for c in by_writer.values())
        text = [
            f"Corrupted files: {file_cases} drawn (truncation at any offset, byte flips, zeroed runs, trailing "
            f"bytes), each judged by torch.load / safetensors; {took}.",
            "",
            *corruption_table(by_writer),
        ]
        harness.publish("corrupted", CORRUPT_START, CORRUPT_END, "\n".join(text) + "\n", file_failures)
    perfect = all(c["correct"] == c["cases"] and not c["false alarms"]
                  for c in [*by_kind.values(), *by_writer.values()] if c["cases"])
    return 0 if perfect else 1


if __name__ == "__main__":
    sys.exit(main())
