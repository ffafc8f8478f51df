"""Issue 12's and 25's speed targets for ``pc.check_resume``.

Against one uninterrupted run: a passing check runs the uninterrupted run (saving at the resume
point and going on: its first ``at`` steps are the interrupted run's first half), the
reproducibility gate's second run up to the resume point, and the resumed half: two runs of the
steps, 3 ``start``s, the project's save once and its load once, plus the state it captures. The
ratio is the check's time over one uninterrupted run (``start`` plus the steps, nothing of ours)
on the same loop, medians of interleaved rounds:

- tiny: the benchmark MLP loop of the resume detection table (dropout, AdamW, warm-up,
  a shuffled resumable loader, numpy/python augmentation, a dict EMA), 14 steps;
- ~10M parameters: a 4-layer MLP of width 1024-2048 with AdamW and a step scheduler,
  batch 64, 10 steps, saving with ``torch.save`` (the run's own save is part of the check).

Against the in-process peer (issue 25): the same MLP loop, 8 steps, resumed after step 4, checked by
``pc.check_resume`` here and by pytest-torch 1.1.1's ``assert_resume_equivalent`` in a long-lived
worker in the peers' venv (``make peers``; ``resume/peer_timer.py``, the detection table's adapter):
both timed in-process around the one call, interpreter and imports paid before the first round,
rounds interleaved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import harness

sys.path.insert(0, str(Path(__file__).resolve().parent / "resume"))

GOAL = 3.5
#: issue 25: the ~10M-parameter check over one run, and the check over pytest-torch in-process
GOAL_LARGE, GOAL_PEER = 3.0, 1.0
STEPS_LARGE = 10
#: the peer row's loop: the MLP family, 8 steps, resumed after step 4
STEPS_PEER, AT_PEER = 8, 4
PEERS_PYTHON = Path(os.environ.get("PEERS_PYTHON", harness.ROOT / ".venv-peers" / "bin" / "python"))


@dataclass
class LargeConfig:
    width: int = 2048
    depth: int = 4
    batch: int = 64


def large_start(cfg: LargeConfig):
    layers: list[nn.Module] = [nn.Linear(1024, cfg.width), nn.GELU()]
    for _ in range(cfg.depth - 2):
        layers += [nn.Linear(cfg.width, cfg.width), nn.GELU()]
    layers.append(nn.Linear(cfg.width, 1024))
    model = nn.Sequential(*layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    data = torch.Generator().manual_seed(7)
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler, "data": data, "step": 0, "cfg": cfg}


def large_step(run):
    x = torch.randn(run["cfg"].batch, 1024, generator=run["data"])
    loss = (run["model"](x) - x).pow(2).mean()
    run["optimizer"].zero_grad(set_to_none=True)
    loss.backward()
    run["optimizer"].step()
    run["scheduler"].step()
    run["step"] += 1
    return loss


def large_save(run, path):
    torch.save({"model": run["model"].state_dict(), "optimizer": run["optimizer"].state_dict(),
                "scheduler": run["scheduler"].state_dict(), "data": run["data"].get_state(),
                "step": run["step"]}, path)


def large_load(run, path):
    state = torch.load(path, weights_only=True)
    run["model"].load_state_dict(state["model"])
    run["optimizer"].load_state_dict(state["optimizer"])
    run["scheduler"].load_state_dict(state["scheduler"])
    run["data"].set_state(state["data"])
    run["step"] = state["step"]
    return run


def _uninterrupted(start, step, config, steps):
    run = start(config)
    for _ in range(steps):
        step(run)


def _case(label: str, start, step, save, load, config, steps: int, rounds: int, params: int,
          goal: float = GOAL) -> harness.Row:
    import pytest_ckpt as pc

    work = Path(tempfile.mkdtemp(prefix="ckpt-resume-bench-"))
    cases = {
        "one run": lambda: _uninterrupted(start, step, config, steps),
        "check": lambda: pc.check_resume(start, step, save=save, load=load, steps=steps, config=config,
                                         workdir=work),
    }
    t = harness.interleaved(cases, rounds=rounds)
    ratio = t["check"].median / t["one run"].median
    return harness.Row(
        "12", f"`pc.check_resume` / one uninterrupted run, {label} ({params / 1e6:.1f}M parameters, {steps} steps)",
        ratio, "x", limit=goal,
        note=(f"check {t['check'].median:.2f} s, one run {t['one run'].median:.2f} s; a passing check runs "
              f"2 runs' steps, 3 starts, 1 save, 1 load; check range {t['check'].spread}"))


class _PeerWorker:
    """pytest-torch in a long-lived process of the peers' python: each call is one in-process check."""

    def __init__(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        self.proc = subprocess.Popen([str(PEERS_PYTHON), str(harness.HERE / "resume" / "peer_timer.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self._answer()  # ready: its imports are done

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the pytest-torch worker ({PEERS_PYTHON}) exited with {self.proc.wait()}")
        return json.loads(line)

    def seconds(self, family: str, at: int, steps: int) -> float:
        self.proc.stdin.write(f"{family} - {at} {steps}\n")
        self.proc.stdin.flush()
        out = self._answer()
        if out["raised"]:
            raise RuntimeError("pytest-torch flagged the correct loop: the rows would compare unlike work")
        return out["seconds"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _versus_peer(rounds: int) -> harness.Row:
    import loops

    import pytest_ckpt as pc

    measure = f"`pc.check_resume` / pytest-torch `assert_resume_equivalent`, in-process, MLP loop, {STEPS_PEER} steps"
    if not PEERS_PYTHON.exists():
        return harness.Row("25", measure, float("nan"), "x", GOAL_PEER, note=f"{PEERS_PYTHON} absent: `make peers`")
    start, step, save, load = loops.functions("mlp")
    cfg = loops.config("mlp", None)
    work = Path(tempfile.mkdtemp(prefix="ckpt-resume-peer-"))

    def ours() -> float:
        began = time.perf_counter()
        pc.check_resume(start, step, save=save, load=load, steps=STEPS_PEER, at=AT_PEER, config=cfg, workdir=work)
        return time.perf_counter() - began

    peer = _PeerWorker()
    try:
        cases = {"pytest-ckpt": ours, "pytest-torch": lambda: peer.seconds("mlp", AT_PEER, STEPS_PEER)}
        for fn in cases.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {n: [] for n in cases}
        names = list(cases)
        for r in range(7 * rounds):  # ~0.05 s a case: more rounds than the other rows, for a steadier median
            for name in names[r % 2:] + names[:r % 2]:
                times[name].append(cases[name]())
    finally:
        peer.close()
    t = {n: harness.Timing(v) for n, v in times.items()}
    return harness.Row(
        "25", measure, t["pytest-ckpt"].median / t["pytest-torch"].median, "x", GOAL_PEER,
        peers={"pytest-torch 1.1.1": harness.fmt(t["pytest-torch"].median, "s"),
               "pytest-ckpt": harness.fmt(t["pytest-ckpt"].median, "s")},
        note="both timed in-process around the one call (pytest-torch in a long-lived worker of the peers' venv); "
             "pytest-ckpt also runs its reproducibility gate (the run's first half again), pytest-torch none",
        spread=f"pytest-ckpt {t['pytest-ckpt'].spread}, pytest-torch {t['pytest-torch'].spread}")


def run(work: Path, rounds: int) -> list[harness.Row]:
    import loops

    torch.set_num_threads(1)
    start, step, save, load = loops.functions("mlp")
    tiny_cfg = loops.config("mlp", None)
    tiny_params = sum(p.numel() for p in loops.components(start(tiny_cfg))["model"].parameters())
    rows = [_case("tiny MLP loop", start, step, save, load, tiny_cfg, loops.FAMILY_INFO["mlp"]["steps"],
                  rounds, tiny_params)]
    cfg = LargeConfig()
    params = sum(p.numel() for p in large_start(cfg)["model"].parameters())
    rows.append(_case("~10M-parameter MLP", large_start, large_step, large_save, large_load, cfg, STEPS_LARGE,
                      rounds, params, goal=GOAL_LARGE))
    rows.append(_versus_peer(rounds))
    return rows
