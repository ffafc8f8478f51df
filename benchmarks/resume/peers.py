"""Runners for three peer tools on the benchmark loops, each in a fresh subprocess.

    run_pytest_torch(family, bug, at, steps) -> dict
    run_trainparity(family, bug, at, steps)  -> dict
    run_ckpt_chaos(family, bug, at, steps)   -> dict

Each returns dict(detected, first_step, component, components, seconds, raw, error):
``first_step`` counted from 1 (the peer's own numbering converted), ``component`` the
first cause the peer's report blames, ``components`` all of them, mapped to one
vocabulary: weights, optimizer, scheduler, scaler, rng:<stream>, data, counter, ema,
lr (a param group's learning rate differs), hidden (the peer says the cause is
outside what it compared), result (ckpt-chaos: the
result file differs; it names nothing). ``seconds`` is the subprocess wall time
(interpreter start and imports included), ``cpu_seconds`` the CPU time of its whole
process tree. ``error`` is set when the peer could not
give a verdict (crash, timeout, ABSTAIN/ERROR).

Global seeds follow the pytest-ckpt contract in every adapter: 0 before the
uninterrupted runs and the first half, a different seed before the resumed start().

    python peers.py pytest-torch mlp optimizer-not-loaded 3     # one case, prints the dict
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
#: the peers live in their own venv (make peers): never a dependency of pytest-ckpt
PYTHON = os.environ.get("PEERS_PYTHON", sys.executable)
CKPT_CHAOS = str(Path(PYTHON).with_name("ckpt-chaos"))


def _bug_arg(bug: Optional[str]) -> str:
    return bug or "correct"


def _child_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(HERE), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")
    env.update(extra or {})
    return env


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _spawn(cmd: list[str], timeout: float, env: Optional[dict[str, str]] = None) -> tuple[int, str, float, float]:
    """Run a command; returns (returncode, stdout+stderr, wall seconds, CPU seconds).

    CPU seconds are user+sys of the whole process tree (wait4 on the child counts every
    descendant it reaped): a cost measure that a busy machine does not inflate the way
    it inflates wall time. A timeout kills the child and gives returncode -9."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        p = subprocess.Popen(cmd, cwd=HERE, env=env or _child_env(), stdout=log, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
        timer = threading.Timer(timeout, _kill_group, (p.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        log.seek(0)
        out = log.read()
    rc = -9 if p.returncode == -signal.SIGKILL else p.returncode
    return rc, out + ("\nTIMEOUT" if rc == -9 else ""), time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def _result(detected: bool, first_step: Optional[int], components: list[str], spawn: tuple, raw: str,
            error: Optional[str] = None) -> dict[str, Any]:
    components = list(dict.fromkeys(components))
    return {"detected": detected, "first_step": first_step, "component": components[0] if components else None,
            "components": components, "seconds": round(spawn[2], 2), "cpu_seconds": round(spawn[3], 2),
            "raw": raw, "error": error}


def _last_json(text: str) -> Optional[dict[str, Any]]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


# --------------------------------------------------------------------------- #
# pytest-torch 1.1.1: pytest_torch.training_loop.assert_resume_equivalent
# --------------------------------------------------------------------------- #
# Adaptation: the peer wants make_setup() -> TrainingSetup(model, optimizers, schedulers,
# scaler, state={name: obj with state_dict()}), a `data` source and step(setup, batch).
# Our loops own their data, so data is `lambda i: None` and the step ignores the batch;
# the run rides on the setup (setup.run). save/load wrap ours. Everything the peer can
# compare is handed to it: the loader (has state_dict), the dict EMA and the plain
# counters through small state_dict() wrappers (its own failure text recommends adding
# "step counters, EMA weights" to setup.state); run_pytest_torch_plain declares only the
# TrainingSetup fields, as a user following its docstring would. It sees neither the batches our step
# returns nor our step count; its loss comparison uses its default tolerance
# (rtol 1e-5, atol 1e-6), as a user calling it plainly would.

class _TensorDictState:
    """A dict of tensors (the mlp EMA) seen as an object with state_dict()."""

    def __init__(self, tensors: dict) -> None:
        self.tensors = tensors

    def state_dict(self) -> dict:
        return dict(self.tensors)

    def load_state_dict(self, state: dict) -> None:  # the peer's default loader would call it
        for k, v in state.items():
            self.tensors[k].copy_(v)


class _CountersState:
    """The run's plain int/float/bool attributes seen as an object with state_dict()."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def _items(self) -> dict:
        import loops

        return {k: v for k, v in loops.components(self.run).items() if isinstance(v, (bool, int, float))}

    def state_dict(self) -> dict:
        return self._items()

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            if isinstance(self.run, dict):
                self.run[k] = v
            else:
                setattr(self.run, k, v)


def _child_pytest_torch(family: str, bug: Optional[str], at: int, steps: int, declare_all: bool = True) -> dict[str, Any]:
    import torch
    from pytest_torch import TrainingSetup, assert_resume_equivalent  # public top-level names

    import loops

    torch.set_num_threads(1)
    start, step, save, load = loops.functions(family)
    cfg = loops.config(family, bug)

    def make_setup() -> TrainingSetup:
        run = start(cfg)
        c = loops.components(run)
        state = {}
        if declare_all:  # plain mode: only the TrainingSetup fields, as its docstring example does
            state = {"loader": c["loader"], "counters": _CountersState(run)}
            if "ema" in c:
                state["ema"] = _TensorDictState(c["ema"])
        setup = TrainingSetup(model=c["model"], optimizers=c["optimizer"], schedulers=c["scheduler"],
                              scaler=c.get("scaler"), state=state)
        setup.run = run
        return setup

    def train_step(setup: TrainingSetup, _batch: Any) -> Any:
        out = step(setup.run)
        return out[0] if isinstance(out, tuple) else out

    def save_fn(setup: TrainingSetup, path: Path) -> None:
        save(setup.run, path)

    def load_fn(setup: TrainingSetup, path: Path) -> None:
        out = load(setup.run, path)
        assert out is None or out is setup.run, "load returned another object: the setup would not see it"

    try:
        report = assert_resume_equivalent(make_setup, lambda i: None, train_step, steps=steps, resume_at=at,
                                          save=save_fn, load=load_fn, seed=0)
        return {"raised": False, "message": "", "state_differences": report.state_differences}
    except AssertionError as exc:
        return {"raised": True, "message": str(exc)}


_PT_RULES = [  # (regex on one cause line, component)
    (r"^model:", "weights"),
    (r"^optimizer .*: lr [\d.e+-]+ after loading", "lr"),  # a param group's lr differs
    (r"^optimizer ", "optimizer"),
    (r"^scheduler ", "scheduler"),
    (r"^GradScaler", "scaler"),
    (r"^loader:", "data"),
    (r"^ema:", "ema"),
    (r"^counters:", "counter"),
]


def _pytest_torch_components(message: str) -> list[str]:
    found = []
    for line in message.splitlines():
        line = line.strip().lstrip("-• ").strip()
        m = re.match(r"random number generators \(([^)]*)\) not restored", line)
        if m:
            found += [f"rng:{s.strip()}" for s in m.group(1).split(",")]
            continue
        for pattern, component in _PT_RULES:
            if re.match(pattern, line):
                found.append(component)
                break
    if "difference comes from outside the checkpoint" in message:
        found.append("hidden")
    return found


def run_pytest_torch(family: str, bug: Optional[str], at: int, steps: int, timeout: float = 180,
                     declare_all: bool = True) -> dict[str, Any]:
    child = "pytest-torch" if declare_all else "pytest-torch-plain"
    spawn = _spawn([PYTHON, __file__, "_child", child, family, _bug_arg(bug), str(at), str(steps)], timeout)
    rc, out = spawn[:2]
    payload = _last_json(out)
    if rc != 0 or payload is None:
        return _result(False, None, [], spawn, out[-3000:], error=f"child exit {rc}")
    message = payload["message"]
    m = re.search(r"first divergence at step (\d+)", message)
    first = int(m.group(1)) + 1 if m else None  # the peer counts steps from 0
    return _result(payload["raised"], first, _pytest_torch_components(message), spawn, message)


# pytest-torch's static check, as an extra runner: assert_checkpoint_loads(make_model, file)
# on the checkpoint our save writes after `at` steps (it locates the state dict under
# "model"). It checks keys and shapes only, so it can catch strict-false-loads-nothing
# (every key carries "module.") and nothing else; no resume happens. weights_only=False
# because the mlp checkpoint holds numpy's RNG state, which the default (True) refuses
# with an UnpicklingError rather than an assertion.

def _child_pytest_torch_loads(family: str, bug: Optional[str], at: int, steps: int) -> dict[str, Any]:
    import torch
    from pytest_torch import assert_checkpoint_loads

    import loops

    torch.set_num_threads(1)
    start, step, save, _ = loops.functions(family)
    cfg = loops.config(family, bug)
    loops.seed_all(0)
    run = start(cfg)
    for _ in range(at):
        step(run)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.pt"
        save(run, path)
        try:
            assert_checkpoint_loads(lambda: loops.components(start(cfg))["model"], path, weights_only=False)
            return {"raised": False, "message": ""}
        except AssertionError as exc:
            return {"raised": True, "message": str(exc)}


def run_pytest_torch_loads(family: str, bug: Optional[str], at: int, steps: int, timeout: float = 180) -> dict[str, Any]:
    spawn = _spawn([PYTHON, __file__, "_child", "pytest-torch-loads", family, _bug_arg(bug), str(at), str(steps)],
                   timeout)
    rc, out = spawn[:2]
    payload = _last_json(out)
    if rc != 0 or payload is None:
        return _result(False, None, [], spawn, out[-3000:], error=f"child exit {rc}")
    return _result(payload["raised"], None, ["weights"] if payload["raised"] else [], spawn, payload["message"])


# --------------------------------------------------------------------------- #
# TrainParity 0.1.0: trainparity.check_resume("module:Class") on a ProcessResumeCase
# --------------------------------------------------------------------------- #
# Adaptation: the peer drives a *command* per phase (baseline_a, baseline_b to total_step;
# candidate_split to split_step; candidate_resume from the staged checkpoint to total_step),
# each in a fresh process, and compares only observe_checkpoint(<final checkpoint>) of
# baseline_a and candidate_resume (baseline_b must equal baseline_a, else ABSTAIN).
# The command is worker.py train, which seeds (0 fresh, 1 before a resumed start), calls
# start/load/step and writes the checkpoint with the project's own save at the end; we
# pass --start-step split_step so the resumed phase runs exactly the remaining steps.
# observe_checkpoint returns the whole checkpoint file, so the peer compares everything
# our save wrote (no more: state the save omits is invisible to it). The case class is
# zero-argument (the peer imports it by name in its children), so it reads the case
# from environment variables that check_resume(environment=...) forwards.

class TrainParityCase:
    """ProcessResumeCase for one (family, bug, at, steps), read from BENCH_* variables."""

    def __init__(self) -> None:
        self.family = os.environ["BENCH_FAMILY"]
        self.bug = os.environ["BENCH_BUG"]
        self.split_step = int(os.environ["BENCH_AT"])
        self.total_step = int(os.environ["BENCH_STEPS"])
        self.name = f"{self.family}-{self.bug}-at{self.split_step}"

    def command(self, plan: Any) -> list[str]:
        cmd = [PYTHON, str(HERE / "worker.py"), "train", "--family", self.family, "--bug", self.bug,
               "--run-dir", str(plan.run_dir), "--end-step", str(plan.end_step)]
        if plan.resume_from is not None:
            cmd += ["--resume-from", str(plan.resume_from), "--start-step", str(self.split_step)]
        return cmd

    def checkpoint_path(self, run_dir: Path) -> Path:
        return run_dir / "checkpoint.pt"

    def observe_checkpoint(self, path: Path) -> dict[str, object]:
        import torch

        return dict(torch.load(path, map_location="cpu", weights_only=False))


def _child_trainparity(family: str, bug: Optional[str], at: int, steps: int) -> dict[str, Any]:
    from trainparity import check_resume

    env = {"BENCH_FAMILY": family, "BENCH_BUG": _bug_arg(bug), "BENCH_AT": str(at), "BENCH_STEPS": str(steps),
           "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "TRANSFORMERS_VERBOSITY": "error"}
    os.environ.update(env)  # the case is also built here, in the orchestrating process
    with tempfile.TemporaryDirectory(prefix="tp-bench-") as tmp:
        result = check_resume("peers:TrainParityCase", cwd=HERE, environment=env, timeout=240,
                              temporary_root=Path(tmp))
    return result.to_dict()


_TP_TOP = {"model": "weights", "optimizer": "optimizer", "scheduler": "scheduler", "scaler": "scaler",
           "loader": "data", "step": "counter", "ema": "ema"}


def _tp_component(path: str) -> str:
    top = re.split(r"[.\[]", path, maxsplit=1)[0]
    if top == "rng":
        stream = re.split(r"[.\[]", path)[1] if "." in path else ""
        return f"rng:{stream}" if stream else "rng"
    return _TP_TOP.get(top, top)


def run_trainparity(family: str, bug: Optional[str], at: int, steps: int, timeout: float = 600) -> dict[str, Any]:
    spawn = _spawn([PYTHON, __file__, "_child", "trainparity", family, _bug_arg(bug), str(at), str(steps)], timeout)
    rc, out = spawn[:2]
    payload = _last_json(out)
    if rc != 0 or payload is None:
        return _result(False, None, [], spawn, out[-3000:], error=f"child exit {rc}")
    outcome = payload["outcome"]
    diffs = payload.get("all_differences") or []
    components = [_tp_component(d["path"]) for d in diffs]
    raw = json.dumps({k: payload.get(k) for k in ("outcome", "message", "first_divergent_step", "primary_difference")}
                     | {"n_differences": len(diffs), "paths": [d["path"] for d in diffs[:40]]})
    error = None if outcome in ("PASS", "FAIL") else f"{outcome}: {payload.get('message')}"
    return _result(outcome == "FAIL", payload.get("first_divergent_step"), components, spawn, raw, error)


# --------------------------------------------------------------------------- #
# ckpt-chaos 0.1.8: `ckpt-chaos run` (CLI) on a job that resumes itself
# --------------------------------------------------------------------------- #
# ckpt-chaos tests crash consistency: it records every file event of a fault-free run under
# {out}, kills one copy of the job at each event, reruns the job on the same {out}, and
# compares --result-file with the fault-free run's. It has no notion of a resume point or
# of state: it catches a resume bug only when a crash lands after the checkpoint is
# complete, so the rerun resumes from it, and the bug changes the result file.
# Adaptation: worker.py chaos saves once, after step `at`, with the project's save, then
# writes the final model weights to {out}/final.pt (the result file: what a user would
# compare). `mkdir -p {out}` runs in bash, outside the injector. By default the checkpoint
# lies beside {out} ({out}.ckpt.pt), so the job's only watched event is the final.pt write
# and ckpt-chaos's single crash point is the one that resumes from the checkpoint
# (1 reference + 1 control + 1 crash + 1 resume process). With save_events=True the
# checkpoint is inside {out}: its save (torch.save tmp + rename) adds two crash points,
# which restart from scratch and PASS for every variant: 3x the cost, no extra signal for
# resume bugs (use that mode for the interrupted-save benchmark). Bugs that leave the
# final weights alone (EMA, counters, scheduler state that changes nothing) cannot show.

def run_ckpt_chaos(family: str, bug: Optional[str], at: int, steps: int, timeout: float = 600,
                   save_events: bool = False) -> dict[str, Any]:
    ckpt = "" if save_events else " --ckpt {out}.ckpt.pt"
    job = (f"mkdir -p {{out}} && exec {shlex.quote(PYTHON)} {shlex.quote(str(HERE / 'worker.py'))} chaos "
           f"--family {family} --bug {_bug_arg(bug)} --at {at} --steps {steps} --out {{out}}{ckpt}")
    with tempfile.TemporaryDirectory(prefix="chaos-bench-") as tmp:
        cmd = [CKPT_CHAOS, "run", "--work", str(Path(tmp) / "work"), "--modes", "before",
               "--max-points", "3" if save_events else "1", "--jobs", "1", "--timeout", "240",
               "--result-file", "{out}/final.pt", "--step-regex", r"resumed from step (\d+)",
               "--", "bash", "-c", job]
        spawn = _spawn(cmd, timeout)
    rc, out = spawn[:2]
    rows = re.findall(r"^(#\d+ \S+ \[\w+\]|no crash \(control\))\s+(\S+)\s+(.*?)\s{2,}(\S+)\s+"
                      r"(PASS|HARD_FAIL|SILENT_DIVERGENCE|LOST_WORK|CONTROL_FAIL|\(todo\))", out, flags=re.M)
    if rc not in (0, 1) or not rows:
        return _result(False, None, [], spawn, out[-3000:], error=f"exit {rc}")
    bad = [r for r in rows if r[4] != "PASS"]
    control_bad = any(r[0].startswith("no crash") for r in bad)  # CONTROL_FAIL, or a control that diverged
    resumed = [r for r in rows if re.search(rf"resumed from step {at}\b", r[2])]
    table = "\n".join(line for line in out.splitlines()
                      if line.startswith(("#", "no crash", "PASS", "SILENT", "HARD", "LOST")))
    components = ["result"] if any(r[4] == "SILENT_DIVERGENCE" for r in bad) else []
    components += ["load"] if any(r[4] == "HARD_FAIL" for r in bad) else []
    error = ("control (no crash) run diverged: not reproducible" if control_bad else
             None if resumed else f"no crash point resumed from step {at}")
    return _result(bool(bad), None, components, spawn, table, error=error)


RUNNERS = {"pytest-torch": run_pytest_torch, "trainparity": run_trainparity, "ckpt-chaos": run_ckpt_chaos}
def run_pytest_torch_plain(family: str, bug: Optional[str], at: int, steps: int, timeout: float = 180) -> dict[str, Any]:
    """pytest-torch with only model/optimizer/scheduler/scaler declared (no loader, EMA, counters)."""
    return run_pytest_torch(family, bug, at, steps, timeout, declare_all=False)


EXTRA_RUNNERS = {"pytest-torch-plain": run_pytest_torch_plain,  # not in the default run
                 "pytest-torch-loads": run_pytest_torch_loads}
_CHILDREN = {"pytest-torch": _child_pytest_torch, "trainparity": _child_trainparity,
             "pytest-torch-loads": _child_pytest_torch_loads,
             "pytest-torch-plain": lambda *a: _child_pytest_torch(*a, declare_all=False)}


if __name__ == "__main__":
    if sys.argv[1] == "_child":
        peer, fam, bug_name, at_, steps_ = sys.argv[2:7]
        print(json.dumps(_CHILDREN[peer](fam, None if bug_name == "correct" else bug_name, int(at_), int(steps_)),
                         default=str))
    else:
        peer, fam, bug_name, at_ = sys.argv[1:5]
        import loops  # noqa: E402  (only for the default step count)

        steps_ = int(sys.argv[5]) if len(sys.argv) > 5 else loops.FAMILY_INFO[fam]["steps"]
        res = (RUNNERS | EXTRA_RUNNERS)[peer](fam, None if bug_name == "correct" else bug_name, int(at_), steps_)
        print(json.dumps(res, indent=1))
