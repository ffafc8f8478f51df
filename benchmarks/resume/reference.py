"""A tiny reference resume checker, only to validate the benchmark loops (not the product).

For (family, bug, at): runs the loop uninterrupted twice (same global seeds: must be
bitwise reproducible), then interrupted: seed, start, `at` steps, save; reseed to a
*different* seed, start, load, the remaining steps. Reports

  * losses_equal / first_step: the first resumed step (counted from 1) whose loss or batch
    differs from the uninterrupted run's;
  * load_diff: run components that differ right after load from the uninterrupted run's
    state after step `at` (global RNG streams that no step draws from are left out);
  * final_diff: components that differ after the last step.

    python reference.py                 # every family x bug x resume point, table + asserts
    python reference.py mlp ema-not-saved 3
"""
from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

import loops

SEED, OTHER_SEED = 0, 1


# --------------------------------------------------------------------------- #
# Generic view of a run's state: flat {path: value}
# --------------------------------------------------------------------------- #
def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, torch.Tensor):
        out[prefix] = value.detach().clone()
    elif isinstance(value, (bool, int, float, str)) or value is None:
        out[prefix] = value
    elif isinstance(value, np.ndarray):
        out[prefix] = torch.from_numpy(value.copy())
    elif isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    else:
        out[prefix] = repr(value)


def _component(value: Any) -> Any:
    """What of one run attribute is state: state_dict(), generator state, tensors, numbers."""
    if isinstance(value, torch.Generator):
        return value.get_state()
    if hasattr(value, "state_dict") and callable(value.state_dict):
        return value.state_dict()
    if isinstance(value, (torch.Tensor, bool, int, float)):
        return value
    if isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values()):
        return value  # a dict-based EMA
    return None  # config and other plain objects: not state


def global_rng() -> dict[str, Any]:
    return {"rng.python": random.getstate(), "rng.numpy": np.random.get_state(), "rng.torch": torch.get_rng_state()}


def state_of(run: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in loops.components(run).items():
        state = _component(value)
        if state is not None:
            _flatten(name, state, out)
    for name, value in global_rng().items():
        _flatten(name, value, out)
    return out


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    return type(a) is type(b) and a == b


def diff_components(a: dict[str, Any], b: dict[str, Any], skip: set[str] = frozenset()) -> list[str]:
    """Top-level components (model, optimizer, rng.torch, ...) whose flattened state differs."""
    differing = set()
    for key in set(a) | set(b):
        top = key.split("[")[0]
        top = ".".join(top.split(".")[:2]) if top.startswith("rng.") else top.split(".")[0]
        if top in skip:
            continue
        if key not in a or key not in b or not _equal(a[key], b[key]):
            differing.add(top)
    return sorted(differing)


def _loss(out: Any) -> tuple[float, Optional[torch.Tensor]]:
    loss, batch = out if isinstance(out, tuple) else (out, None)
    return float(loss), batch


# --------------------------------------------------------------------------- #
# The check
# --------------------------------------------------------------------------- #
def _uninterrupted(family: str, cfg: loops.LoopConfig, steps: int, at: int) -> dict[str, Any]:
    start, step, _, _ = loops.functions(family)
    loops.seed_all(SEED)
    run = start(cfg)
    rng_before = global_rng()
    losses, batches, at_state = [], [], None
    for i in range(1, steps + 1):
        loss, batch = _loss(step(run))
        losses.append(loss)
        batches.append(batch)
        if i == at:
            at_state = state_of(run)
    rng_after = global_rng()
    unused = {k for k in rng_before if _equal_rng(rng_before[k], rng_after[k])}
    return {"losses": losses, "batches": batches, "at_state": at_state, "final": state_of(run), "unused": unused}


def _equal_rng(a: Any, b: Any) -> bool:
    fa, fb = {}, {}
    _flatten("r", a, fa)
    _flatten("r", b, fb)
    return not diff_components(fa, fb)


def check(family: str, bug: Optional[str], at: int, steps: Optional[int] = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    steps = steps or loops.FAMILY_INFO[family]["steps"]
    cfg = loops.config(family, bug)
    started = time.perf_counter()
    ref = _uninterrupted(family, cfg, steps, at)
    again = _uninterrupted(family, cfg, steps, at)
    reproducible = (ref["losses"] == again["losses"] and not diff_components(ref["final"], again["final"])
                    and all(torch.equal(x, y) for x, y in zip(ref["batches"], again["batches"])))

    start, step, save, load = loops.functions(family)
    with tempfile.TemporaryDirectory(prefix="ref-check-") as tmp:
        path = Path(tmp) / "ckpt.pt"
        loops.seed_all(SEED)
        run = start(cfg)
        for _ in range(at):
            step(run)
        save(run, path)
        del run
        loops.seed_all(OTHER_SEED)
        fresh = start(cfg)
        resumed = load(fresh, path)
        resumed = fresh if resumed is None else resumed
    load_diff = diff_components(ref["at_state"], state_of(resumed), skip=ref["unused"])
    first_step = None
    for i in range(at + 1, steps + 1):
        loss, batch = _loss(step(resumed))
        if loss != ref["losses"][i - 1] or (batch is not None and not torch.equal(batch, ref["batches"][i - 1])):
            first_step = i
            break
    if first_step is not None:  # finish the run for the final-state comparison
        for _ in range(first_step + 1, steps + 1):
            step(resumed)
    final_diff = diff_components(ref["final"], state_of(resumed), skip=ref["unused"])
    return {
        "family": family, "bug": bug, "at": at, "steps": steps, "reproducible": reproducible,
        "losses_equal": first_step is None, "first_step": first_step,
        "load_diff": load_diff, "final_diff": final_diff,
        "detected": first_step is not None or bool(load_diff) or bool(final_diff),
        "unused_streams": sorted(ref["unused"]), "seconds": round(time.perf_counter() - started, 3),
    }


def cell(result: dict[str, Any]) -> str:
    """L9 = loss/batch differs from step 9 on; S = only state differs; . = identical."""
    if result["first_step"] is not None:
        return f"L{result['first_step']}" + ("" if result["load_diff"] else "*")
    if result["load_diff"] or result["final_diff"]:
        return "S" + ("" if result["load_diff"] else "*")
    return "."


def matrix() -> list[dict[str, Any]]:
    """Every family x (correct + bugs) x resume point; prints a table; asserts the expectations."""
    results = []
    for family in loops.FAMILIES:
        points = loops.resume_points(family)
        print(f"\n### {family}  (epoch {loops.FAMILY_INFO[family]['epoch_len']} steps, milestone "
              f"{loops.FAMILY_INFO[family]['milestone']}, N={loops.FAMILY_INFO[family]['steps']})\n")
        print("| bug | " + " | ".join(f"{n} (at={a})" for n, a in points.items()) + " | load_diff at first |")
        print("|---|" + "---|" * (len(points) + 1))
        for bug in (None,) + loops.BUGS[family]:
            row = []
            for name, at in points.items():
                r = check(family, bug, at)
                r["point"] = name
                results.append(r)
                row.append(r)
            print(f"| {bug or 'correct'} | " + " | ".join(cell(r) for r in row) + f" | {','.join(row[0]['load_diff'])} |")
    print("\nL<k>: first differing loss/batch at step k; S: losses equal, state differs; '*': state equal right "
          "after load (differs only later); '.': identical.")
    bad = [r for r in results if not r["reproducible"]]
    assert not bad, f"not reproducible: {bad}"
    alarms = [r for r in results if r["bug"] is None and r["detected"]]
    assert not alarms, f"correct loops fail: {alarms}"
    for family in loops.FAMILIES:
        for bug in loops.BUGS[family]:
            assert any(r["detected"] for r in results if r["family"] == family and r["bug"] == bug), (family, bug)
    return results


if __name__ == "__main__":
    if len(sys.argv) >= 4:
        fam, bug_name, at_ = sys.argv[1], sys.argv[2], int(sys.argv[3])
        print(json.dumps(check(fam, None if bug_name == "correct" else bug_name, at_), indent=1))
    else:
        t0 = time.perf_counter()
        res = matrix()
        out = Path(__file__).with_name("results") / "ref_check.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(res, indent=1))
        print(f"\nall assertions hold; {len(res)} checks in {time.perf_counter() - t0:.0f}s -> {out}")
