"""Command-line training jobs built from the loops, for the peers that drive a *command*
(TrainParity's process cases, ckpt-chaos's `run`). Global seeds follow the pytest-ckpt
contract: seed 0 for a fresh run, a different seed (1) before a resumed run's start().

  python worker.py train --family F [--bug B] --run-dir D --end-step N [--resume-from P --start-step S]
      fresh: N steps, then save(run, D/checkpoint.pt). Resumed: start, load(P), steps S+1..N, save.
  python worker.py chaos --family F [--bug B] --at A --steps N --out OUT [--ckpt PATH]
      a job that resumes itself: if PATH (default OUT/ckpt.pt) exists it loads it and goes on
      from step A, else it trains from scratch and saves PATH after step A. Either way it ends
      by writing the final weights to OUT/final.pt (the file ckpt-chaos compares).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import loops

SEED, OTHER_SEED = 0, 1


def _fresh_or_resumed(family: str, bug: str | None, resume_from: Path | None):
    start, step, save, load = loops.functions(family)
    cfg = loops.config(family, bug)
    if resume_from is None:
        loops.seed_all(SEED)
        return start(cfg)
    loops.seed_all(OTHER_SEED)
    run = start(cfg)
    out = load(run, resume_from)
    return run if out is None else out


def _loss(out) -> float:
    return float(out[0] if isinstance(out, tuple) else out)


def train(a: argparse.Namespace) -> None:
    _, step, save, _ = loops.functions(a.family)
    run = _fresh_or_resumed(a.family, a.bug, a.resume_from)
    first = a.start_step if a.resume_from is not None else 0
    losses = [_loss(step(run)) for _ in range(first, a.end_step)]
    a.run_dir.mkdir(parents=True, exist_ok=True)
    save(run, a.run_dir / "checkpoint.pt")
    (a.run_dir / "losses.json").write_text(json.dumps({"first_step": first + 1, "losses": losses}))


def chaos(a: argparse.Namespace) -> None:
    _, step, save, _ = loops.functions(a.family)
    ckpt = a.ckpt or a.out / "ckpt.pt"
    resumed = ckpt.exists()
    run = _fresh_or_resumed(a.family, a.bug, ckpt if resumed else None)
    first = a.at if resumed else 0
    print(f"resumed from step {first}", flush=True)
    for i in range(first + 1, a.steps + 1):
        print(f"step {i} loss {_loss(step(run))!r}", flush=True)
        if i == a.at and not resumed:
            save(run, ckpt)
    model = loops.components(run)["model"]
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, a.out / "final.pt")


def main() -> None:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--family", required=True)
    t.add_argument("--bug")
    t.add_argument("--run-dir", type=Path, required=True)
    t.add_argument("--end-step", type=int, required=True)
    t.add_argument("--resume-from", type=Path)
    t.add_argument("--start-step", type=int, default=0)
    c = sub.add_parser("chaos")
    c.add_argument("--family", required=True)
    c.add_argument("--bug")
    c.add_argument("--at", type=int, required=True)
    c.add_argument("--steps", type=int, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--ckpt", type=Path, help="checkpoint path (default OUT/ckpt.pt)")
    a = p.parse_args()
    a.bug = None if a.bug in (None, "", "correct") else a.bug
    train(a) if a.cmd == "train" else chaos(a)


if __name__ == "__main__":
    main()
