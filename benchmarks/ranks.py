"""Target 14: per-test time of the rank variations' round trips, first and later, with and without
the reused rank workers (``PYTEST_CKPT_RANK_POOL=0`` starts fresh ranks for every test, as before).

A real ``pytest`` run on a tiny project: ``TESTS`` fsdp round trips of a small model, then the same
number of ddp ones; the per-test times are pytest's own ``--durations`` (call phase).

    python benchmarks/ranks.py        # prints the rows
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

TESTS = 5
PROJECT = '''
import pytest
from torch import nn


def tiny():
    return nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.mark.ckpt_roundtrip("fsdp")
@pytest.mark.parametrize("n", range({tests}))
def test_fsdp(ckpt, n):
    ckpt.roundtrip(tiny)


@pytest.mark.ckpt_roundtrip("ddp")
@pytest.mark.parametrize("n", range({tests}))
def test_ddp(ckpt, n):
    ckpt.roundtrip(tiny)
'''
LINE = re.compile(r"^([\d.]+)s call\s+\S*::test_(fsdp|ddp)\[ckpt-\w+-(\d+)\]")


def durations(project: Path, pool: bool) -> dict[str, list[float]]:
    """Per-test call seconds by variation, in run order."""
    env = {**os.environ, "PYTHONPATH": str(harness.ROOT), "PYTEST_CKPT_RANK_POOL": "1" if pool else "0"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                          "-p", "no:randomly", "--durations=0", "--durations-min=0", "-vv"],
                         cwd=project, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    found: dict[str, dict[int, float]] = {"fsdp": {}, "ddp": {}}
    for line in out.stdout.splitlines():
        m = LINE.match(line.strip())
        if m:
            found[m.group(2)][int(m.group(3))] = float(m.group(1))
    return {k: [v[i] for i in sorted(v)] for k, v in found.items()}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2 if xs else float("nan")


def run(work: Path, rounds: int = 1) -> list[harness.Row]:
    project = work / "ranks-project"
    project.mkdir(exist_ok=True)
    (project / "test_ranks.py").write_text(PROJECT.format(tests=TESTS))
    (project / "pytest.ini").write_text("[pytest]\n")
    reused, fresh = durations(project, pool=True), durations(project, pool=False)
    rows = []
    for kind in ("fsdp", "ddp"):
        now, before = reused[kind], fresh[kind]
        rows.append(harness.Row("14", f"`{kind}` round trip of a tiny model: first test", now[0], "s",
                                peers={"fresh ranks per test (before)": harness.fmt(before[0], "s")}))
        rows.append(harness.Row("14", f"`{kind}` round trip of a tiny model: later tests (median of {TESTS - 1})",
                                _median(now[1:]), "s", 1.0,
                                peers={"fresh ranks per test (before)": harness.fmt(_median(before[1:]), "s")},
                                note=f"later tests {', '.join(harness.fmt(x, 's') for x in now[1:])}"))
    return rows


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="ckpt-ranks-") as tmp:
        for row in run(Path(tmp)):
            print(f"{row.measure}: {harness.fmt(row.value, row.unit)}"
                  + (f" (target {harness.fmt(row.limit, row.unit)}: {'met' if row.met else 'MISSED'})"
                     if row.limit else "")
                  + "".join(f"; {k}: {v}" for k, v in row.peers.items()) + (f"; {row.note}" if row.note else ""))
