"""Target 6: a diff of 200,000 small tensors (a large MoE's key count) with 1,000 differences."""

from __future__ import annotations

from pathlib import Path

import harness

LAYERS, EXPERTS, PARAMS = 100, 500, ("gate_proj.weight", "up_proj.weight", "down_proj.weight", "router.bias")


def state_dicts():
    """Expected and actual: 200,000 tensors; actual has 1,000 differences of four kinds."""
    import torch

    names = [f"model.layers.{i}.mlp.experts.{e}.{p}" for i in range(LAYERS) for e in range(EXPERTS) for p in PARAMS]
    base = torch.zeros(len(names), 4)
    expected = {n: base[i] for i, n in enumerate(names)}
    # other tensor objects with equal bits, as when a model is compared with a loaded file
    actual = {n: t.clone() for n, t in expected.items()}
    step = len(names) // 1000
    picked = names[::step][:1000]
    for k, name in enumerate(picked):
        kind = k % 4
        if kind == 0:  # a value drifted
            actual[name] = torch.ones(4)
        elif kind == 1:  # a shape changed
            actual[name] = torch.zeros(8)
        elif kind == 2:  # renamed: one missing, one unexpected
            del actual[name]
            actual[name.replace("experts", "expert")] = torch.zeros(4)
        else:  # a dtype changed
            actual[name] = torch.zeros(4, dtype=torch.float16)
    return expected, actual


def run(work: Path, rounds: int) -> list[harness.Row]:
    import pytest_ckpt as pc

    expected, actual = state_dicts()
    report: list[str] = []

    def ours():
        d = pc.diff(expected, actual)
        report[:] = [str(d)]
        return d

    def by_hand():  # the usual test: keys, then shapes, dtypes and torch.equal per key
        import torch

        bad = [k for k in expected if k not in actual or actual[k].shape != expected[k].shape
               or actual[k].dtype != expected[k].dtype or not torch.equal(actual[k], expected[k])]
        return bad + [k for k in actual if k not in expected]

    timing = harness.interleaved({"pytest-ckpt": ours, "loop of torch.equal": by_hand}, rounds=rounds)
    lines = report[0].splitlines()
    (work / "names-report.txt").write_text(report[0])
    return [
        harness.Row("6", "`pc.diff` of 200,000 tensors, 1,000 differences", timing["pytest-ckpt"].median, "s", 2.0,
                    peers={"loop of `torch.equal` (no report)": harness.fmt(timing["loop of torch.equal"].median, "s")},
                    spread=timing["pytest-ckpt"].spread),
        harness.Row("6", "report length", len(lines), "lines", 50.0,
                    note=f"longest line {max(map(len, lines))} chars"),
    ]
