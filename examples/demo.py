"""``make demo``: pytest-ckpt on a real little project, passing, then catching the five classic drifts,
a resume drift and a save that a kill tears; a ``transformers.Trainer`` that resumes exactly, and its
``save_only_model=True`` drift caught; last, the clean suite under ``torchrun`` on 2 ranks.

examples/tinyllm/ is a small GPT-style project: ``train.py`` trains under DDP
and torch.compile, saves a nested training state and resumes from it, ``infer.py``
loads it the way inference code does, and ``tests/`` checks them with pytest-ckpt
(round trips, snapshots, and a resume check). The demo runs that suite once as
is, then once per drift (``TINYLLM_DRIFT=<name>`` patches one function, see
``tinyllm/drifts.py``), ends with a table, and then runs the clean suite again under
``torchrun --nproc-per-node 2`` (the launched world: both ranks run it, rank 0 alone reports).

    python examples/demo.py            # what `make demo` runs
    python examples/demo.py --fast     # fewer variations; no training run, inspect, Trainer or torchrun (the suite runs this)

Exit 0 only when the clean suite passes (also under torchrun) and every drift is detected.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent / "tinyllm"
#: the variations the demo runs (the suite itself lists more; see its markers): round trips, and
#: resume checks under ``plain`` (the one name both markers share here)
VARIATIONS = "plain,ddp+compile,nested,layers-1,layers+1,interrupted"
FAST_VARIATIONS = "plain,layers-1,layers+1,interrupted"


@dataclass(frozen=True)
class Drift:
    name: str
    title: str
    #: what in the failing output shows the cause: patterns tried in order, the first found is printed
    evidence: tuple[str, ...]
    cause: str
    fix: str


DRIFTS = [
    Drift("layers", "serving config lost a block (n_layer 4 -> 3)",
          (r"\[layer-count\] .*",),
          "layer count: checkpoint has 4 blocks, serving model 3",
          "build the serving model with the training config's n_layer (or retrain at 3)"),
    Drift("flat", "loader expects flat weights; training saves a nested state",
          # pytest-ckpt's note under the loader's own error; torch's key list where no round trip ran
          (r'\[nested\] the weights are nested at \S+ in the checkpoint \(\d+ tensors\)',
           r'\[nested\] weights found nested at \S+ \(\d+ tensors\)',
           r'Unexpected key\(s\) in state_dict: "epoch", "step", "config"'),
          "weights nested at trainer.var_wo_ddp; loader reads top level",
          "unwrap checkpoint['trainer']['var_wo_ddp'] (pc.load_into finds it by itself)"),
    Drift("prefix", "naive loader vs DDP/compile prefixes",
          (r'\[prefix\] every name (?:your load passes|in the checkpoint) starts with \S+',
           r'\[prefix\] wrapper prefix \S+ removed',
           r'Unexpected key\(s\) in state_dict: "_orig_mod\.module\.[^"]*"'),
          "keys carry _orig_mod.module. (torch.compile(DDP(model)))",
          "strip with consume_prefix_in_state_dict_if_present, or save the unwrapped model"),
    Drift("lenient", "loader switched to load_state_dict(strict=False)",
          (r"load_state_dict\(strict=False\) silently dropped .*",),
          "strict=False dropped a block silently: --ckpt-audit-loads names file and line",
          "load strictly; or pc.load_into(model, path, strict=False) and check report.diff"),
    Drift("interrupted", "serving export preempted before its last shard",
          (r"incomplete: shard \S+ named by \S+ is absent",),
          "index names model-00002-of-00002.safetensors; the file is absent",
          "write shards first and the index last, atomically; pc.verify(dir) before publishing"),
    Drift("scheduler", "training state saved without the LR scheduler",
          (r"\[resume-scheduler\] .*",),
          "a resumed run restarts the warm-up: the scheduler is not in the checkpoint",
          "save scheduler.state_dict() with the training state; load it when resuming"),
    Drift("inplace", "training save writes straight onto its path (no temporary file + rename)",
          (r"\[hard fail\] torn \S+ at 50%: your load raised .*",),
          "a job killed mid-save leaves model.pt torn: the previous checkpoint is gone",
          "save to a temporary name, then os.replace it over the path (pc.save does both)"),
]


# -- running the suite ---------------------------------------------------------------------------

@dataclass
class Run:
    label: str
    code: int
    log: str
    seconds: float

    @property
    def summary(self) -> str:
        """pytest's last line, e.g. ``2 failed, 7 passed in 6.01s``."""
        lines = [l.strip("= ") for l in self.log.splitlines() if re.search(r"\b(passed|failed|error)", l)]
        return lines[-1] if lines else f"exit code {self.code}"

    @property
    def failed(self) -> list[str]:
        """Test names from pytest's short summary (``-rf``)."""
        _, _, short = self.log.partition("short test summary info")
        return [l.split("::", 1)[1].split(" ")[0] for l in short.splitlines() if l.startswith("FAILED ")]


def interrupted_only_in(variations: str, leave_out: bool) -> str:
    """``variations`` without ``interrupted`` when ``leave_out``: its child process and kills cost a few
    seconds a run, so it runs where it finds something (the inplace drift) and in the clean run."""
    return ",".join(v for v in variations.split(",") if not (leave_out and v == "interrupted"))


def pytest_args(variations: str, extra: list[str]) -> list[str]:
    return ["-p", "no:cacheprovider", "-q", "-rf", "--tb=short", "-p", "no:xdist",
            f"--ckpt-variations={variations}", *extra]


class Runner:
    """Runs the suite in child processes, two at a time (one per core of a small CI machine).

    On Linux the children are forked from this process once torch, pytest and the
    project are imported, which saves each run a few seconds of imports; elsewhere
    they are fresh interpreters.
    """

    def __init__(self, workdir: Path, jobs: int = 2) -> None:
        self.workdir = workdir
        self.jobs = jobs
        self.forking = sys.platform.startswith("linux") and hasattr(os, "fork")
        self.pending: list[tuple[str, dict, list[str]]] = []
        self.running: dict[int, tuple[str, Path, float, subprocess.Popen | None]] = {}
        self.done: dict[str, Run] = {}
        if self.forking:
            preload()

    def submit(self, label: str, env: dict, argv: list[str]) -> None:
        self.pending.append((label, env, argv))
        self._fill()

    def result(self, label: str) -> Run:
        while label not in self.done:
            self._reap()
            self._fill()
        return self.done[label]

    def _fill(self) -> None:
        while self.pending and len(self.running) < self.jobs:
            label, env, argv = self.pending.pop(0)
            log = self.workdir / f"{label}.log"
            started = time.monotonic()
            if self.forking:
                pid = fork_child(log, env, argv)
                self.running[pid] = (label, log, started, None)
            else:
                with open(log, "wb") as out:
                    proc = subprocess.Popen([sys.executable, *argv], cwd=PROJECT, stdout=out,
                                            stderr=subprocess.STDOUT, env={**os.environ, **env})
                self.running[proc.pid] = (label, log, started, proc)

    def _reap(self) -> None:
        pid, status = os.wait()
        if pid not in self.running:
            return
        label, log, started, _ = self.running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        self.done[label] = Run(label, code, log.read_text(errors="replace"), time.monotonic() - started)


def preload() -> None:
    """Import what every run needs, once, before forking (no threads or process groups yet)."""
    sys.path.insert(0, str(PROJECT))
    import pytest  # noqa: F401
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401
    import torch.distributed  # noqa: F401

    import pytest_ckpt.api  # noqa: F401
    import pytest_ckpt.plugin  # noqa: F401
    import pytest_ckpt.plugin.fixture  # noqa: F401
    import pytest_ckpt.checks.roundtrip  # noqa: F401
    from tinyllm import infer, train  # noqa: F401


def fork_child(log: Path, env: dict, argv: list[str]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 70
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(PROJECT)
        os.environ.update(env)
        if argv[:2] == ["-m", "pytest"]:
            import pytest

            code = int(pytest.main(argv[2:]))
        else:  # ["-m", "tinyllm.train", ...]: run the module as python -m would
            import runpy

            sys.argv = [argv[1], *argv[2:]]
            try:
                runpy.run_module(argv[1], run_name="__main__")
                code = 0
            except SystemExit as exit_:
                code = int(exit_.code or 0)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - a child must never return into the parent's code
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


# -- output ----------------------------------------------------------------------------------------

def step(n: int, total: int, text: str) -> None:
    print(f"[{n}/{total}] {text}", flush=True)


def indent(lines, prefix="      ") -> None:
    for line in lines:
        print(prefix + line, flush=True)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def evidence(run: Run, drift: Drift) -> str | None:
    for pattern in drift.evidence:
        match = re.search(pattern, run.log)
        if match:
            return match.group(0).strip()
    return None


def table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    head = ("drift", "detected?", "failing tests", "cause")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    rule = "-+-".join("-" * w for w in widths)
    return [fmt.format(*head).rstrip(), rule, *(fmt.format(*r).rstrip() for r in rows)]


def under_torchrun(workdir: Path, ranks: int = 2) -> tuple[bool, list[str]]:
    """The clean suite under ``torchrun --nproc-per-node ranks``: whether it passed on every rank with
    rank 0 alone reporting (no pytest-ckpt section on another rank, the report written once), and
    what to print."""
    logs, report = workdir / "torchrun", workdir / "torchrun-report.json"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
            "--log-dir", str(logs), "-r", "3", "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
            "-p", "no:randomly", "-rf", f"--ckpt-report={report}"]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "LOCAL_RANK")}
    proc = subprocess.run(argv, cwd=PROJECT, env={**env, "TINYLLM_DRIFT": ""}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=900)
    outputs = [next(logs.glob(f"*/attempt_0/{rank}/stdout.log"), None) for rank in range(ranks)]
    texts = [path.read_text(errors="replace") if path else "" for path in outputs]
    header = next((line for line in texts[0].splitlines() if line.startswith("pytest-ckpt: rank 0")), "")
    summaries = [Run(f"rank {r}", proc.returncode, t, 0).summary for r, t in enumerate(texts)]
    lines = [clip(header, 130)] + [f"rank {r}: {summary}" for r, summary in enumerate(summaries)]
    silent = all("= pytest-ckpt =" not in t for t in texts[1:])
    counts = json.loads(report.read_text())["summary"] if report.exists() else {}
    lines.append(f"--ckpt-report from rank 0: {counts or 'not written'}; the other rank printed "
                 f"{'no' if silent else 'a'} pytest-ckpt summary")
    ok = (proc.returncode == 0 and bool(header) and silent and set(counts) == {"passed"}
          and all("passed" in p and "failed" not in p for p in summaries))
    if not ok:
        lines.append(proc.stdout.decode(errors="replace")[-2000:])
    return ok, lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true",
                        help=f"variations {FAST_VARIATIONS} only (interrupted in the inplace drift's run only); "
                             "no training run, inspect or torchrun")
    parser.add_argument("--jobs", type=int, default=2, help="suite runs at once (default 2)")
    args = parser.parse_args(argv)
    variations = FAST_VARIATIONS if args.fast else VARIATIONS
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: threads only fight each other
    started = time.monotonic()
    total = 3 + len(DRIFTS) + (0 if args.fast else 2)
    workdir = Path(tempfile.mkdtemp(prefix="pytest-ckpt-demo-"))
    keep = True  # the logs stay when something went wrong
    try:
        import torch

        import pytest_ckpt

        step(1, total, f"setup: python {sys.version.split()[0]}, torch {torch.__version__}, "
                       f"pytest-ckpt {pytest_ckpt.__version__}, {os.cpu_count()} cores")
        runner = Runner(workdir, jobs=args.jobs)
        ckpt = workdir / "last.ckpt"
        if not args.fast:  # the suite trains what it checks by itself: this run is for the reader
            runner.submit("train", {}, ["-m", "tinyllm.train", "--steps", "20", "--out", str(ckpt)])
        runner.submit("clean", {"TINYLLM_DRIFT": ""},
                      ["-m", "pytest", *pytest_args(interrupted_only_in(variations, args.fast), [])])
        for drift in DRIFTS:
            runner.submit(drift.name, {"TINYLLM_DRIFT": drift.name},
                          ["-m", "pytest", *pytest_args(interrupted_only_in(variations, drift.name != "inplace"), [])])
        if not args.fast:  # a framework's own save and resume: transformers' Trainer
            runner.submit("trainer", {}, ["-m", "tinyllm.trainer_resume"])

        if args.fast:
            step(2, total, "train.py and pytest-ckpt inspect: left out by --fast")
        else:
            train = runner.result("train")
            step(2, total, "train.py: 20 steps under DDP (1-process gloo) + torch.compile, nested training state")
            indent([l for l in train.log.splitlines() if l.startswith("trained ")] or train.log.splitlines()[-5:])
            runner.submit("inspect", {}, ["-m", "pytest_ckpt.cli", "inspect", str(ckpt)])
            print("      $ pytest-ckpt inspect last.ckpt", flush=True)
            inspect = runner.result("inspect")
            indent([clip(l.replace(str(ckpt), "last.ckpt"), 110) for l in inspect.log.splitlines()
                    if l.strip() and not l.startswith(("  [", "[rank"))][:6])

        clean = runner.result("clean")
        clean_variations = interrupted_only_in(variations, args.fast)
        step(3, total, f"clean suite: pytest examples/tinyllm --ckpt-variations={clean_variations}")
        indent([clean.summary])
        if clean.code != 0:
            print("\nthe clean suite failed; its output:\n", flush=True)
            print(clean.log)
            print(f"(logs: {workdir})")
            return 1

        rows, all_detected = [], True
        for i, drift in enumerate(DRIFTS, start=1):
            run = runner.result(drift.name)
            found = evidence(run, drift)
            detected = run.code == 1 and found is not None
            all_detected &= detected
            step(3 + i, total, f"drift {i}/{len(DRIFTS)} {drift.name}: {drift.title}  "
                               f"(TINYLLM_DRIFT={drift.name})")
            indent([f"{'FAILED' if run.code else 'passed'}: {run.summary}"])
            indent([clip(f"failing: {', '.join(run.failed)}", 130)])
            indent([clip(f"says:    {found or '(no diagnosis found in the output)'}", 130)])
            indent([f"cause:   {drift.cause}", f"fix:     {drift.fix}"])
            rows.append((drift.name, "yes" if detected else "NO",
                         f"{len(run.failed)}", drift.cause))

        print(flush=True)
        indent(table(rows), prefix="  ")
        print(flush=True)
        launched = ""
        if not args.fast:
            trainer = runner.result("trainer")
            step(total - 1, total, "a transformers.Trainer resumed from its own checkpoint-3 "
                                   "(pc.check_resume_hf, tiny Llama, CPU)")
            indent([clip(l, 150) for l in trainer.log.splitlines() if l.startswith(("correct", "save_only", "  ["))
                    or l.startswith("skipped")] or trainer.log.splitlines()[-5:])
            all_detected &= trainer.code == 0
            launched = "; the Trainer resumes exactly and its save_only_model drift is caught" if trainer.code == 0 \
                else "; THE TRAINER STEP FAILED"
        if not args.fast:  # the runs above are done: the 2 ranks get both cores
            step(total, total, "clean suite under torchrun --standalone --nproc-per-node 2 -m pytest "
                               "(ddp runs on the launched world)")
            launched_ok, lines = under_torchrun(workdir)
            indent(lines)
            print(flush=True)
            launched += "; under torchrun on 2 ranks passed" if launched_ok else "; UNDER TORCHRUN IT FAILED"
            all_detected &= launched_ok
        verdict = (f"all {len(DRIFTS)} drifts detected" if all(r[1] == "yes" for r in rows)
                   else f"SOME DRIFTS WERE NOT DETECTED (logs: {workdir})")
        print(f"clean suite passed{launched}; {verdict}; {time.monotonic() - started:.0f}s", flush=True)
        keep = not all_detected
        return 0 if all_detected else 1
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
