"""Target 4: the nine save-side variations of a small transformer, through the real ``ckpt`` fixture."""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import harness

TEST = '''
import pytest
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        h = self.norm(x)
        return x + self.attn(h, h, h, need_weights=False)[0] + self.mlp(h)


class Tiny(nn.Module):
    def __init__(self, vocab=128, d=64, n_layers=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Block(d) for _ in range(n_layers))
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.embed.weight  # tied, as language models do

    def forward(self, ids):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def build():
    return Tiny()


@pytest.mark.ckpt_roundtrip
def test_roundtrip(ckpt):
    ckpt.roundtrip(build, inputs=torch.arange(16).reshape(2, 8))
'''


def scalar_parameter():
    """A model FSDP2 refuses: a 0-d parameter (CLIP's logit_scale)."""
    import torch
    from torch import nn

    model = nn.Linear(4, 4)
    model.logit_scale = nn.Parameter(torch.tensor(2.0))
    return model


def fsdp_skip_row(rounds: int) -> harness.Row:
    """The ``fsdp`` variation of a model FSDP2 refuses: a skip, decided before any rank starts."""
    import torch  # noqa: F401 - a test session has torch imported before its first check

    import pytest_ckpt as pc

    times, message = [], ""
    for _ in range(rounds + 1):  # the first call pays pytest-ckpt's and FSDP's imports: said in the note
        start = time.perf_counter()
        try:
            pc.check_roundtrip(scalar_parameter, variation="fsdp")
        except pc.VariationUnavailable as e:
            message = str(e)
        else:
            raise RuntimeError("the fsdp variation ran a model FSDP2 refuses")
        times.append(time.perf_counter() - start)
    later = sorted(times[1:])
    return harness.Row("4", "`fsdp` variation that ends in a skip (a 0-d parameter FSDP2 refuses)",
                       later[len(later) // 2], "s", 1.0,
                       note=f"first call {harness.fmt(times[0], 's')} (torch imported before; pytest-ckpt's and FSDP's "
                            f"imports in it); skip: {message[:90]}")


def run(work: Path, rounds: int) -> list[harness.Row]:
    project = work / "roundtrip-project"
    project.mkdir(exist_ok=True)
    (project / "test_roundtrip.py").write_text(TEST)
    per: dict[str, list[float]] = {}
    walls, failures = [], []
    for r in range(rounds):
        xml = project / f"junit-{r}.xml"
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
             f"--junitxml={xml}", "test_roundtrip.py"],
            cwd=project, capture_output=True, text=True, timeout=300,
        )
        walls.append(time.perf_counter() - start)
        if not xml.exists():
            raise RuntimeError(f"pytest did not run:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = case.get("name", "").split("[ckpt-")[-1].rstrip("]")
            per.setdefault(name, []).append(float(case.get("time", 0)))
            bad = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
            if bad:
                failures.append(f"{name}: {bad[0]} {(case.find(bad[0]).get('message') or '')[:120]}")
    median = {k: sorted(v)[len(v) // 2] for k, v in per.items()}
    total = sum(median.values())
    rows = [
        harness.Row("4", f"nine variations, total ({len(median)} ran)", total, "s", 10.0,
                    note=f"pytest wall time with start-up {harness.fmt(sorted(walls)[len(walls) // 2], 's')}"
                         + (f"; not passed: {'; '.join(sorted(set(failures)))}" if failures else "")),
    ]
    for name, t in sorted(median.items(), key=lambda kv: -kv[1]):
        rows.append(harness.Row("4", f"variation `{name}`", t, "s", 8.0 if name == "fsdp" else None))
    rows.append(fsdp_skip_row(rounds))
    return rows
