"""Target 5: what the installed plugin adds to ``pytest --collect-only`` in a project that never uses it."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import harness

TEST = "def test_one():\n    assert 1 + 1 == 2\n\n\ndef test_two():\n    assert 'a' < 'b'\n"


def run(work: Path, rounds: int) -> list[harness.Row]:
    project = work / "unused-project"
    project.mkdir(exist_ok=True)
    (project / "test_plain.py").write_text(TEST)
    (project / "pytest.ini").write_text("[pytest]\n")
    # hypothesis' own plugin imports hypothesis (~0.8 s here): off in both, so it neither adds
    # noise nor hides a hypothesis import of ours
    base = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
            "-p", "no:hypothesispytest"]

    cpu: dict[str, list[float]] = {}

    def collect(label: str, *extra: str):
        def go():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([*base, *extra], cwd=project, check=True, capture_output=True, env=_installed_env())
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.setdefault(label, []).append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        return go

    cases = {"plugin installed": collect("plugin installed"), "-p no:ckpt": collect("-p no:ckpt", "-p", "no:ckpt")}
    timing = harness.interleaved(cases, rounds=rounds)
    with_plugin, without = timing["plugin installed"], timing["-p no:ckpt"]
    # paired differences: each round ran both back to back, so slow spells of the shared
    # machine fall on both; the median of the pairs is the figure
    deltas = sorted(a - b for a, b in zip(with_plugin.times, without.times))
    cpu_deltas = sorted(a - b for a, b in zip(cpu["plugin installed"][-rounds:], cpu["-p no:ckpt"][-rounds:]))
    heavy = subprocess.run([*base, "-p", "benchmarks_heavy"], cwd=project, capture_output=True, text=True,
                           env={**_env(), "PYTHONPATH": str(harness.HERE)})
    loaded = next((line for line in heavy.stdout.splitlines() if line.startswith("heavy")), "check failed")
    own_ms = _own_import_ms(project, base)
    return [
        harness.Row("5", "`pytest --collect-only`: plugin installed, unused, added time",
                    _median(deltas) * 1000, "ms", 20.0,
                    peers={"with plugin": harness.fmt(with_plugin.median, "s"),
                           "`-p no:ckpt`": harness.fmt(without.median, "s"),
                           "added CPU time (user+sys)": f"{_median(cpu_deltas) * 1000:+.1f} ms"},
                    note=f"median of {len(deltas)} paired per-round deltas, which range "
                         f"{deltas[0] * 1000:+.0f} to {deltas[-1] * 1000:+.0f} ms; "
                         f"pytest_ckpt modules' own import time {own_ms:.1f} ms (-X importtime); bytecode cached, as "
                         f"installed; {loaded}",
                    spread=f"{with_plugin.spread} / {without.spread}"),
    ]


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2


def _own_import_ms(project: Path, base: list[str]) -> float:
    """Self time of every ``pytest_ckpt`` module pytest imported, summed, median of 3 runs."""
    totals = []
    for _ in range(3):
        proc = subprocess.run([base[0], "-X", "importtime", *base[1:]], cwd=project, capture_output=True, text=True,
                              env=_installed_env())
        total = 0
        for line in proc.stderr.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and "pytest_ckpt" in parts[2]:
                total += int(parts[0].split(":")[1])
        totals.append(total / 1000)
    return sorted(totals)[1]


def _installed_env() -> dict:
    """The environment, with Python's bytecode cache allowed as an installed package has it (pip
    compiles on install; an editable install writes ``__pycache__`` on first import). A machine that
    sets ``PYTHONDONTWRITEBYTECODE`` (this sandbox does) would recompile our modules on every start,
    a cost no user pays; the warm-up round writes the cache."""
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
