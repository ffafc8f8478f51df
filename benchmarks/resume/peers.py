"""The peer resume checkers on the benchmark loops, measured the way pytest-ckpt is.

    with Peers() as peers:
        peers.run("pytest-torch", family, bug, at, steps)         # in-process: a long-lived worker
    run_fresh("pytest-torch", family, bug, at, steps)            # the same check in a fresh interpreter
    run_ckpt_chaos(family, bug, at, steps)                       # a CLI: its own processes, always

Tools: ``pytest-torch`` (1.1.1, ``assert_resume_equivalent`` with every component it can compare
declared), ``pytest-torch-plain`` (only the ``TrainingSetup`` fields), ``pytest-torch-loads``
(``assert_checkpoint_loads``), ``trainparity`` (0.1.0, its public ``check_resume`` on a
``ProcessResumeCase``), ``trainparity-runner`` (its shipped, unexported
``trainparity.runner.ResumeRunner`` on a ``ResumeExecutionCase``), ``ckpt-chaos`` (0.1.8, CLI).

Process model: pytest-ckpt's cases run in the benchmark's process, which imported torch and
transformers once. ``Peers`` gives each tool the same: a long-lived worker in the peers' venv
(``pool.py``) that imports torch, numpy, transformers, the loops and the tool once, then times
only the check call. TrainParity's two checks start fresh interpreters themselves (by design:
four per ``ResumeRunner`` case, four commands and their captures per ``check_resume`` case);
that is part of their check call and of their seconds. ``run_fresh`` runs one check in a fresh
interpreter and times the whole process (interpreter start and imports included).

Each result is dict(detected, first_step, first_line, components, seconds, cpu_seconds, raw,
error): ``first_step`` counted from 1 (the tool's numbering converted), ``first_line`` the
components the first cause line of the tool's report names (one line may name several at once:
pytest-torch's "random number generators (python, torch, numpy) not restored" names three),
``components`` every component named, in order, in one vocabulary: weights, optimizer,
scheduler, scaler, rng:<stream>, data, counter, ema, lr (a param group's learning rate
differs), gradient, hidden (the tool says the cause is outside what it compared), result
(ckpt-chaos: the result file differs; it names nothing), load. ``seconds`` is the check call's
wall time (``run_fresh``: the process's), ``cpu_seconds`` the CPU time it used, its child
processes included. ``error`` is set when the tool gave no verdict (crash, timeout,
ABSTAIN/ERROR).

Global seeds follow the pytest-ckpt contract in every adapter: 0 before the uninterrupted runs
and the first half, a different seed before the resumed start().

    python peers.py pytest-torch mlp optimizer-not-loaded 3 [--fresh]   # one case, prints the dict
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
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
#: the peers live in their own venv (make peers): never a dependency of pytest-ckpt
PYTHON = os.environ.get("PEERS_PYTHON", sys.executable)
CKPT_CHAOS = str(Path(PYTHON).with_name("ckpt-chaos"))
SEED, OTHER_SEED = 0, 1


def right_first(result: dict[str, Any], expected: set[str]) -> bool:
    """A person's reading of a report: it found the cause first when its first cause line names it.

    A line naming several components names all of them at once, so the right one among them counts
    (``right_first({"detected": True, "first_line": ["rng:python", "rng:torch"]}, {"rng:torch"})``)."""
    return bool(result["detected"] and set(result["first_line"]) & expected)


def _bug_arg(bug: Optional[str]) -> str:
    return bug or "correct"


def _child_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(HERE), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")
    env.update(extra or {})
    return env


def _result(detected: bool, first_step: Optional[int], lines: list[list[str]], raw: str,
            error: Optional[str] = None) -> dict[str, Any]:
    """``lines``: the components each cause line of the report names, in the report's order."""
    lines = [line for line in lines if line]
    return {"detected": detected, "first_step": first_step, "first_line": lines[0] if lines else [],
            "components": list(dict.fromkeys(c for line in lines for c in line)), "raw": raw, "error": error}


def _loops():
    import loops  # imported late: this module is also imported where torch is not wanted yet

    return loops


# --------------------------------------------------------------------------- #
# pytest-torch 1.1.1: pytest_torch.training_loop.assert_resume_equivalent
# --------------------------------------------------------------------------- #
# Adaptation: the peer wants make_setup() -> TrainingSetup(model, optimizers, schedulers,
# scaler, state={name: obj with state_dict()}), a `data` source and step(setup, batch).
# Our loops own their data, so data is `lambda i: None` and the step ignores the batch;
# the run rides on the setup (setup.run). save/load wrap ours. Everything the peer can
# compare is handed to it: the loader (has state_dict), the dict EMA and the plain
# counters through small state_dict() wrappers (its own failure text recommends adding
# "step counters, EMA weights" to setup.state); pytest-torch-plain declares only the
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


def _counters(run: Any) -> dict[str, Any]:
    """The run's plain int/float/bool attributes (its step counters)."""
    return {k: v for k, v in _loops().components(run).items() if isinstance(v, (bool, int, float))}


class _CountersState:
    """The run's plain int/float/bool attributes seen as an object with state_dict()."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def state_dict(self) -> dict:
        return _counters(self.run)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            if isinstance(self.run, dict):
                self.run[k] = v
            else:
                setattr(self.run, k, v)


def _check_pytest_torch(family: str, bug: Optional[str], at: int, steps: int, declare_all: bool = True) -> dict:
    from pytest_torch import TrainingSetup, assert_resume_equivalent  # public top-level names

    loops = _loops()
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
        assert_resume_equivalent(make_setup, lambda i: None, train_step, steps=steps, resume_at=at,
                                 save=save_fn, load=load_fn, seed=SEED)
        return {"raised": False, "message": ""}
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


def pytest_torch_lines(message: str) -> list[list[str]]:
    """The components each cause line of pytest-torch's message names, in its order.

    One line naming several RNG streams ("random number generators (python, torch, numpy) not
    restored") names all of them at once: it is one cause line, not three."""
    lines: list[list[str]] = []
    for line in message.splitlines():
        line = line.strip().lstrip("-• ").strip()
        m = re.match(r"random number generators \(([^)]*)\) not restored", line)
        if m:
            lines.append([f"rng:{s.strip()}" for s in m.group(1).split(",")])
            continue
        for pattern, component in _PT_RULES:
            if re.match(pattern, line):
                lines.append([component])
                break
    if "difference comes from outside the checkpoint" in message:
        lines.append(["hidden"])
    return lines


def _read_pytest_torch(payload: dict[str, Any]) -> dict[str, Any]:
    message = payload["message"]
    m = re.search(r"first divergence at step (\d+)", message)
    first = int(m.group(1)) + 1 if m else None  # the peer counts steps from 0
    return _result(payload["raised"], first, pytest_torch_lines(message), message)


# pytest-torch's static check, as an extra runner: assert_checkpoint_loads(make_model, file)
# on the checkpoint our save writes after `at` steps (it locates the state dict under
# "model"). It checks keys and shapes only, so it can catch strict-false-loads-nothing
# (every key carries "module.") and nothing else; no resume happens. weights_only=False
# because the mlp checkpoint holds numpy's RNG state, which the default (True) refuses
# with an UnpicklingError rather than an assertion.

def _check_pytest_torch_loads(family: str, bug: Optional[str], at: int, steps: int) -> dict[str, Any]:
    from pytest_torch import assert_checkpoint_loads

    loops = _loops()
    start, step, save, _ = loops.functions(family)
    cfg = loops.config(family, bug)
    loops.seed_all(SEED)
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


def _read_pytest_torch_loads(payload: dict[str, Any]) -> dict[str, Any]:
    return _result(payload["raised"], None, [["weights"]] if payload["raised"] else [], payload["message"])


# --------------------------------------------------------------------------- #
# TrainParity 0.1.0: the paths of its differences, in our vocabulary
# --------------------------------------------------------------------------- #
# check_resume's paths are the checkpoint's keys (model, optimizer, loader, rng.torch, ...);
# ResumeRunner's are its snapshot's (model, buffer, gradient, optimizer, scheduler, scaler,
# batch, rng.torch_cpu, extra.<name>, and `step`, the TrainingState's step).

_TP_TOP = {"model": "weights", "buffer": "weights", "gradient": "gradient", "optimizer": "optimizer",
           "scheduler": "scheduler", "scaler": "scaler", "loader": "data", "batch": "data", "step": "counter",
           "counters": "counter", "ema": "ema"}
_TP_STREAMS = {"torch_cpu": "torch"}


def trainparity_component(path: str) -> str:
    parts = [p for p in re.split(r"[.\[\]\"]+", path) if p]
    if parts and parts[0] == "extra":  # ResumeRunner: the extras the case declared, by name
        parts = parts[1:]
    if not parts:
        return path
    if parts[0] == "rng":
        return f"rng:{_TP_STREAMS.get(parts[1], parts[1])}" if len(parts) > 1 else "rng"
    return _TP_TOP.get(parts[0], parts[0])


def _read_trainparity(payload: dict[str, Any], first_step: Optional[int]) -> dict[str, Any]:
    outcome = payload["outcome"]
    diffs = payload.get("all_differences") or []
    raw = json.dumps({k: payload.get(k) for k in ("outcome", "message", "first_divergent_step", "primary_difference")}
                     | {"n_differences": len(diffs), "paths": [d["path"] for d in diffs[:40]]})
    error = None if outcome in ("PASS", "FAIL") else f"{outcome}: {payload.get('message')}"
    # one difference, one path: each names one component
    return _result(outcome == "FAIL", first_step, [[trainparity_component(d["path"])] for d in diffs], raw, error)


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

def _case_env(family: str, bug: Optional[str], at: int, steps: int) -> dict[str, str]:
    return {"BENCH_FAMILY": family, "BENCH_BUG": _bug_arg(bug), "BENCH_AT": str(at), "BENCH_STEPS": str(steps),
            "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "TRANSFORMERS_VERBOSITY": "error"}


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


def _check_trainparity(family: str, bug: Optional[str], at: int, steps: int) -> dict[str, Any]:
    from trainparity import check_resume

    env = _case_env(family, bug, at, steps)
    os.environ.update(env)  # the case is also built here, in the orchestrating process
    with tempfile.TemporaryDirectory(prefix="tp-bench-") as tmp:
        result = check_resume("peers:TrainParityCase", cwd=HERE, environment=env, timeout=240,
                              temporary_root=Path(tmp))
    return result.to_dict()


def _read_check_resume(payload: dict[str, Any]) -> dict[str, Any]:
    return _read_trainparity(payload, payload.get("first_divergent_step"))


# --------------------------------------------------------------------------- #
# TrainParity 0.1.0: trainparity.runner.ResumeRunner (in the wheel, not exported)
# --------------------------------------------------------------------------- #
# Adaptation: ResumeRunner().run("module:Class", total_steps, split_step, seed) starts four
# fresh `python -m trainparity.worker` processes (baseline A and B to total_steps, the
# pre-save run to split_step then case.save, the resumed run from case.load) and compares a
# snapshot after every step, and right after load, exactly: model, buffers, gradients,
# optimizer (by parameter name), scheduler, scaler, global RNGs, TrainingState.step, the
# batch identity and the extras observe() declares. What the case gives it:
#  * build(seed): seeds (0), start(); load(path, seed): another seed (1), start(), our load;
#  * step = the run's own counter (run.step / run["step"]), read after each step and load;
#  * observe(): the batch's sample ids, and as extras everything pytest-torch is given:
#    the loader, the counters, the EMA;
#  * train_step ends with zero_grad(set_to_none=True): the snapshot holds gradients, which
#    no checkpoint restores, and every loop zeroes them before its next backward anyway;
#  * the last batch's ids go beside the checkpoint (`.batch.json`), since observe() must
#    name the last completed batch right after load too.

def _runner_state(run: Any, last_batch: Optional[list[int]]) -> Any:
    from trainparity.protocols import TrainingState

    c = _loops().components(run)
    state = TrainingState(model=c["model"], optimizer=c["optimizer"], scheduler=c["scheduler"],
                          step=int(c["step"]), scaler=c.get("scaler"))
    state.run, state.last_batch = run, last_batch
    return state


class TrainParityRunnerCase:
    """ResumeExecutionCase for one (family, bug), read from BENCH_* variables."""

    def __init__(self) -> None:
        loops = _loops()
        self.start, self.step, self.save_run, self.load_run = loops.functions(os.environ["BENCH_FAMILY"])
        bug = os.environ["BENCH_BUG"]
        self.config = loops.config(os.environ["BENCH_FAMILY"], None if bug == "correct" else bug)

    def build(self, seed: int) -> Any:
        _loops().seed_all(seed)
        return _runner_state(self.start(self.config), None)

    def train_step(self, state: Any) -> None:
        _, batch = self.step(state.run)
        state.last_batch = [int(i) for i in batch]
        state.step = int(_loops().components(state.run)["step"])
        state.optimizer.zero_grad(set_to_none=True)

    def save(self, state: Any, path: Path) -> None:
        self.save_run(state.run, path)
        Path(f"{path}.batch.json").write_text(json.dumps(state.last_batch))

    def load(self, path: Path, seed: int) -> Any:
        _loops().seed_all(seed + OTHER_SEED)
        run = self.start(self.config)
        out = self.load_run(run, path)
        return _runner_state(run if out is None else out, json.loads(Path(f"{path}.batch.json").read_text()))

    def observe(self, state: Any) -> Any:
        from trainparity.protocols import StepObservation

        c = _loops().components(state.run)
        extras = {"loader": c["loader"], "counters": _counters(state.run)}
        if "ema" in c:
            extras["ema"] = c["ema"]
        ids = None if state.last_batch is None else tuple(state.last_batch)
        return StepObservation(sample_ids=ids, extras=extras)


def _check_trainparity_runner(family: str, bug: Optional[str], at: int, steps: int) -> dict[str, Any]:
    from trainparity.runner import ResumeRunner

    os.environ.update(_case_env(family, bug, at, steps))  # its workers inherit the environment
    result = ResumeRunner(timeout=240).run("peers:TrainParityRunnerCase", total_steps=steps, split_step=at,
                                           seed=SEED).to_dict()
    if result["outcome"] == "ABSTAIN" and "snapshot capture did not complete" in result["message"]:
        result["message"] += f" ({_capture_issue()})"  # its worker keeps the reason to itself
    return result


def _capture_issue() -> str:
    """Why ResumeRunner's snapshot of a freshly built run abstains, in its own words."""
    from trainparity.worker import _capture

    case = TrainParityRunnerCase()
    issue = _capture(case.build(SEED), None).issue
    return "no issue" if issue is None else f"{issue.path}: {issue.detail}"


def _read_runner(payload: dict[str, Any]) -> dict[str, Any]:
    # its snapshot k is the state after k steps (step k ran differently), except k == split:
    # the state right after load, which names the resume point and no step of the run
    k, at = payload.get("first_divergent_step"), payload.get("_at")
    return _read_trainparity(payload, None if k == at else k)


# --------------------------------------------------------------------------- #
# ckpt-chaos 0.1.8: `ckpt-chaos run` (CLI) on a job that resumes itself
# --------------------------------------------------------------------------- #
# ckpt-chaos tests crash consistency: it records every file event of a fault-free run under
# {out}, kills one copy of the job at each event, reruns the job on the same {out}, and
# compares --result-file with the fault-free run's. It has no notion of a resume point or
# of state: it catches a resume bug only when a crash lands after the checkpoint is
# complete, so the rerun resumes from it, and the bug changes the result file. It is a
# command that starts its own processes: it has no in-process form.
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

def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def spawn(cmd: list[str], timeout: float, env: Optional[dict[str, str]] = None) -> tuple[int, str, float, float]:
    """Run a command; returns (returncode, stdout+stderr, wall seconds, CPU seconds).

    CPU seconds are user+sys of the whole process tree (wait4 on the child counts every
    descendant it reaped). A timeout kills the child's process group and gives returncode -9."""
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
        rc, out, seconds, cpu = spawn(cmd, timeout)
    timing = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2)}
    rows = re.findall(r"^(#\d+ \S+ \[\w+\]|no crash \(control\))\s+(\S+)\s+(.*?)\s{2,}(\S+)\s+"
                      r"(PASS|HARD_FAIL|SILENT_DIVERGENCE|LOST_WORK|CONTROL_FAIL|\(todo\))", out, flags=re.M)
    if rc not in (0, 1) or not rows:
        return _result(False, None, [], out[-3000:], error=f"exit {rc}") | timing
    bad = [r for r in rows if r[4] != "PASS"]
    control_bad = any(r[0].startswith("no crash") for r in bad)  # CONTROL_FAIL, or a control that diverged
    resumed = [r for r in rows if re.search(rf"resumed from step {at}\b", r[2])]
    table = "\n".join(line for line in out.splitlines()
                      if line.startswith(("#", "no crash", "PASS", "SILENT", "HARD", "LOST")))
    lines = [["result"]] if any(r[4] == "SILENT_DIVERGENCE" for r in bad) else []
    lines += [["load"]] if any(r[4] == "HARD_FAIL" for r in bad) else []
    error = ("control (no crash) run diverged: not reproducible" if control_bad else
             None if resumed else f"no crash point resumed from step {at}")
    return _result(bool(bad), None, lines, table, error=error) | timing


# --------------------------------------------------------------------------- #
# Running a check: in-process (a long-lived worker per tool) or in a fresh interpreter
# --------------------------------------------------------------------------- #

#: tool -> (the check, run in the peers' venv; how its payload is read, here)
TOOLS: dict[str, tuple[Callable[..., dict], Callable[[dict], dict]]] = {
    "pytest-torch": (_check_pytest_torch, _read_pytest_torch),
    "pytest-torch-plain": (lambda *a: _check_pytest_torch(*a, declare_all=False), _read_pytest_torch),
    "pytest-torch-loads": (_check_pytest_torch_loads, _read_pytest_torch_loads),
    "trainparity": (_check_trainparity, _read_check_resume),
    "trainparity-runner": (_check_trainparity_runner, _read_runner),
}
TIMEOUTS = {"trainparity": 600, "trainparity-runner": 600}


def _call(tool: str, family: str, bug: Optional[str], at: int, steps: int) -> dict[str, Any]:
    payload = TOOLS[tool][0](family, bug, at, steps)
    return payload | {"_at": at}


def _warm_up(tool: str) -> None:
    """What the benchmark's own process has imported before it times pytest-ckpt."""
    import numpy  # noqa: F401
    import torch
    import transformers  # noqa: F401
    from transformers import GPT2LMHeadModel  # noqa: F401  (its lazy import, done once)

    torch.set_num_threads(1)
    _loops()
    if tool.startswith("pytest-torch"):
        import pytest_torch  # noqa: F401
    else:
        import trainparity.runner  # noqa: F401


def _answer(tool: str, answer: dict[str, Any]) -> dict[str, Any]:
    timing = {"seconds": round(answer["seconds"], 3), "cpu_seconds": round(answer["cpu_seconds"], 3)}
    if "error" in answer:
        return _result(False, None, [], answer.get("traceback", ""), error=answer["error"]) | timing
    return TOOLS[tool][1](answer["payload"]) | timing


class Peers:
    """A long-lived worker per tool, in the peers' venv, started when the tool is first asked."""

    def __init__(self) -> None:
        import pool

        self.pools, self._pool = {}, pool

    def run(self, tool: str, family: str, bug: Optional[str], at: int, steps: int) -> dict[str, Any]:
        if tool not in self.pools:
            argv = [PYTHON, str(Path(__file__).resolve()), "_serve", tool]
            self.pools[tool] = self._pool.Pool(argv, _child_env(), str(HERE))
        request = {"family": family, "bug": bug, "at": at, "steps": steps}
        try:
            answer = self.pools[tool].ask(request, TIMEOUTS.get(tool, 180))
        except self._pool.WorkerGone as exc:
            return _result(False, None, [], "", error=str(exc)) | {"seconds": None, "cpu_seconds": None}
        return _answer(tool, answer)

    def close(self) -> None:
        for p in self.pools.values():
            p.close()

    def __enter__(self) -> "Peers":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_fresh(tool: str, family: str, bug: Optional[str], at: int, steps: int) -> dict[str, Any]:
    """The same check in a fresh interpreter: ``seconds`` is the whole process (start, imports, check)."""
    rc, out, seconds, cpu = spawn([PYTHON, __file__, "_child", tool, family, _bug_arg(bug), str(at), str(steps)],
                                   TIMEOUTS.get(tool, 180))
    timing = {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3)}
    payload = next((json.loads(line) for line in reversed(out.strip().splitlines()) if line.startswith("{")), None)
    if rc != 0 or payload is None:
        return _result(False, None, [], out[-3000:], error=f"child exit {rc}") | timing
    return TOOLS[tool][1](payload) | timing


if __name__ == "__main__":
    if sys.argv[1] == "_serve":
        import pool as _pool

        _warm_up(sys.argv[2])
        _pool.serve(lambda r, tool=sys.argv[2]: _call(tool, r["family"], r["bug"], r["at"], r["steps"]))
    elif sys.argv[1] == "_child":
        tool, fam, bug_name, at_, steps_ = sys.argv[2:7]
        import torch

        torch.set_num_threads(1)
        print(json.dumps(_call(tool, fam, None if bug_name == "correct" else bug_name, int(at_), int(steps_)),
                         default=str))
    else:
        tool, fam, bug_name, at_ = sys.argv[1:5]
        fresh = "--fresh" in sys.argv
        steps_ = _loops().FAMILY_INFO[fam]["steps"]
        bug_ = None if bug_name == "correct" else bug_name
        if tool == "ckpt-chaos":
            res = run_ckpt_chaos(fam, bug_, int(at_), steps_)
        elif fresh:
            res = run_fresh(tool, fam, bug_, int(at_), steps_)
        else:
            with Peers() as peers:
                res = peers.run(tool, fam, bug_, int(at_), steps_)
        print(json.dumps(res, indent=1))
