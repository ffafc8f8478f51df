"""``make mutation``: named mutants at the points where pytest-ckpt decides a verdict, each run
against the tests that should kill it.

Each mutant (:mod:`mutants`) is one realistic one-line slip: an exact snippet of one module, its
replacement, and what the slip breaks. A named list rather than a generic tool (mutmut,
cosmic-ray): those mutate every operator of a module, most of them in report wording, and each
mutant needs a run of this suite, so a generic run over the verdict modules would take days on two
cores; a named mutant says what it guards, and a snippet that no longer occurs exactly once stops
the run naming the mutant, so the table never goes stale silently.

Nothing is mutated in the working tree: the files git lists are copied to a scratch directory, a
mutant is written there and put back after its run, and pytest runs there (``PYTHONPATH`` set to
the copy, which child processes inherit; each write moves the module's modification time a second
on, so no cached ``.pyc`` of another version hides a mutant).
The mutant's targeted tests run first, with ``-x``; a mutant they do not kill runs against the
whole suite (``make test``'s pytest) before it is called a survivor, and a test that kills it there
is run once more without the mutant, to be sure it passes then. The targeted tests must pass on the
unmutated copy before any mutant runs.

The table goes to stdout, to ``benchmarks/results/mutation.md``, and into README.md between the
``mutation:start``/``mutation:end`` markers (a run of ``--only`` some mutants prints only).

    python benchmarks/mutation.py [--jobs 2] [--only NAME,...] [--no-wider] [--check] [--list]
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import harness  # noqa: E402
from mutants import MUTANTS, TESTS, WIDER, Mutant  # noqa: E402

MARK_START, MARK_END = "<!-- mutation:start -->", "<!-- mutation:end -->"
#: seconds a run of a mutant's targeted tests may take, and of the whole suite
TARGETED_LIMIT, WIDER_LIMIT = 600, 1800
#: the short summary's line of a failing test: "FAILED tests/x.py::test_y[a b] - AssertionError"
_FAILED = re.compile(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", re.M)
#: what an xdist worker or a pytest run leaves in the environment: the child pytest is a run of its own
_RUN_VARIABLES = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID",
                  "PYTEST_CURRENT_TEST", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")


class StaleMutant(Exception):
    """A mutant that no longer applies: its snippet does not occur exactly once, or the result does not compile."""


class DriverError(Exception):
    """pytest could not judge a mutant: the tests fail without it, or a target is not found."""


@dataclass
class Outcome:
    """One mutant's result: ``status`` is ``killed``, ``survived``, ``timeout`` or ``unjudged`` (the test
    that failed under it fails without it too); ``by``: the first
    failing test; ``wider``: killed only by the whole suite."""

    mutant: Mutant
    line: int
    status: str
    by: str = ""
    wider: bool = False
    seconds: float = 0.0


def mutate(root: Path, mutant: Mutant) -> tuple[Path, str, str, int]:
    """``(path, text, mutated text, line)`` of ``mutant``'s module under ``root``; ``StaleMutant`` when
    its snippet does not occur exactly once or the mutated module does not compile."""
    path = root / mutant.module
    fix = "the code changed: update the mutant in benchmarks/mutants.py"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise StaleMutant(f"mutant {mutant.name}: {mutant.module} cannot be read ({e.strerror}); {fix}") from None
    if mutant.original == mutant.replacement:
        raise StaleMutant(f"mutant {mutant.name}: its replacement is its snippet")
    found = text.count(mutant.original)
    if found != 1:
        raise StaleMutant(f"mutant {mutant.name}: its snippet occurs {found} times in {mutant.module}, not once; "
                          f"{fix}\n    snippet: {mutant.original!r}")
    mutated = text.replace(mutant.original, mutant.replacement)
    try:
        compile(mutated, str(path), "exec", dont_inherit=True)
    except SyntaxError as e:
        raise StaleMutant(f"mutant {mutant.name}: {mutant.module} does not compile with it applied "
                          f"(line {e.lineno}: {e.msg})") from None
    at = text.index(mutant.original) + len(mutant.original) - len(mutant.original.lstrip())
    return path, text, mutated, text.count("\n", 0, at) + 1


def targets(mutant: Mutant, tests: Mapping[str, Sequence[str]]) -> list[str]:
    """The tests that should kill ``mutant``: its own, then its module's, each once."""
    return list(dict.fromkeys([*mutant.tests, *tests.get(mutant.module, ())]))


def scratch_copy(root: Path, dest: Path) -> Path:
    """The files git lists in ``root`` (tracked, and untracked but not ignored), copied to ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.split(b"\0")
    for raw in listed:
        src = root / os.fsdecode(raw)
        if raw and src.is_file():  # a tracked file deleted in the working tree is listed too
            (dest / os.fsdecode(raw)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(raw))
    return dest


def environment(scratch: Path) -> dict[str, str]:
    """The environment of a run in ``scratch``: its packages first on the path."""
    env = {k: v for k, v in os.environ.items() if k not in _RUN_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(scratch), os.environ.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def check_isolated(scratch: Path, packages: Iterable[str]) -> None:
    """Each mutated package imports from ``scratch``, not from an installed copy (editable or not)."""
    for package in sorted(set(packages)):
        code = f"import {package}, sys; sys.stdout.write({package}.__file__)"
        out = subprocess.run([sys.executable, "-c", code], cwd=scratch, env=environment(scratch),
                             capture_output=True, text=True)
        where = Path(out.stdout.strip() or "?").resolve()
        if out.returncode or not where.is_relative_to(scratch.resolve()):
            raise DriverError(f"{package} imports from {where}, not from the scratch copy {scratch}: "
                              f"a mutant there would not be tested{out.stderr[-500:]}")


def pytest(scratch: Path, args: Sequence[str], *, processes: int, timeout: float) -> tuple[int | None, str]:
    """pytest in ``scratch`` on ``args`` with ``-x``: ``(exit code or None on timeout, output)``."""
    basetemp = scratch / ".pytest-tmp"
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-o", "addopts=", "-rfE", "-p", "no:cacheprovider",
           f"--basetemp={basetemp}", *(["-n", str(processes)] if processes > 1 else []), *args]
    # a session of its own: a timeout ends the run and every child process it started
    proc = subprocess.Popen(cmd, cwd=scratch, env=environment(scratch), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out
    finally:
        shutil.rmtree(basetemp, ignore_errors=True)


def verdict(code: int | None, out: str, what: str) -> tuple[str, str]:
    """``(status, first failing test)`` of a pytest run; ``DriverError`` when pytest could not judge."""
    if code is None:
        return "timeout", ""
    # the short summary only: a failing test's captured output may hold a pytester run's own FAILED lines
    failed = _FAILED.search(out.rpartition("short test summary info")[2])
    if code == 0:
        return "survived", ""
    if code in (1, 2) and failed:  # 2: interrupted by an error while collecting (a module that cannot import)
        return "killed", failed.group(1)
    raise DriverError(f"pytest could not judge {what} (exit code {code}):\n{out[-3000:]}")


def write(path: Path, text: str) -> None:
    """``text`` into ``path``, modified a whole second after its last write: Python checks a cached
    ``.pyc`` by the source's size and modification second, and a mutant may keep the size."""
    last = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    stamp = max(path.stat().st_mtime_ns, last + 1_000_000_000)
    os.utime(path, ns=(stamp, stamp))


def run_one(scratch: Path, mutant: Mutant, tests: Mapping[str, Sequence[str]], *, processes: int = 1,
            wider: Sequence[str] = (), timeout: float = TARGETED_LIMIT) -> Outcome:
    """``mutant`` applied in ``scratch``, its targeted tests run (or ``wider``), and the module put back."""
    path, text, mutated, line = mutate(scratch, mutant)
    start = time.perf_counter()
    try:
        write(path, mutated)
        args = list(wider) or targets(mutant, tests)
        status, by = verdict(*pytest(scratch, args, processes=processes, timeout=timeout), f"mutant {mutant.name}")
    finally:
        write(path, text)
    return Outcome(mutant, line, status, by, bool(wider), time.perf_counter() - start)


def run_all(root: Path, mutants: Sequence[Mutant], tests: Mapping[str, Sequence[str]], *, jobs: int = 2,
            wider: Sequence[str] = (), log=print) -> list[Outcome]:
    """Every mutant in its own run, ``jobs`` at a time in as many scratch copies of ``root``."""
    for m in mutants:
        mutate(root, m)  # every stale mutant stops the run before anything is copied
    with tempfile.TemporaryDirectory(prefix="ckpt-mutation-") as tmp:
        scratches: queue.Queue[Path] = queue.Queue()
        for i in range(max(1, jobs)):
            scratch = scratch_copy(root, Path(tmp) / str(i))
            scratches.put(scratch)
        first = Path(tmp) / "0"
        check_isolated(first, (m.module.split("/")[0] for m in mutants))
        union = list(dict.fromkeys(t for m in mutants for t in targets(m, tests)))
        log(f"baseline: {len(union)} test targets on the unmutated copy")
        code, out = pytest(first, union, processes=jobs, timeout=WIDER_LIMIT)
        if code != 0:
            raise DriverError("the targeted tests fail without any mutant: fix them first\n" + out[-3000:])

        def job(mutant: Mutant) -> Outcome:
            scratch = scratches.get()
            try:
                outcome = run_one(scratch, mutant, tests)
            finally:
                scratches.put(scratch)
            log(f"{mutant.name}: {outcome.status} {outcome.by} ({outcome.seconds:.0f} s)")
            return outcome

        with ThreadPoolExecutor(max(1, jobs)) as pool:
            outcomes = list(pool.map(job, mutants))
        for i, o in enumerate(outcomes):
            if o.status != "survived" or not wider:
                continue
            log(f"{o.mutant.name}: the targeted tests do not kill it; the whole suite runs")
            w = run_one(first, o.mutant, tests, processes=jobs, wider=wider, timeout=WIDER_LIMIT)
            if w.status == "killed":  # only a test that passes without the mutant has killed it
                code, out = pytest(first, [w.by], processes=1, timeout=TARGETED_LIMIT)
                if code != 0:  # said in the table, not a run lost: the row is no "yes"
                    log(f"{w.by} fails without any mutant too:\n{out[-2000:]}")
                    w.status, w.by = "unjudged", f"{w.by} fails without the mutant too, run alone"
            w.seconds += o.seconds
            outcomes[i] = w
            log(f"{o.mutant.name}: {w.status} {w.by} (whole suite)")
    return outcomes


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(outcomes: Sequence[Outcome], seconds: float, jobs: int, cpu: float | None = None) -> str:
    """The README table: one row per mutant, in the order of the list; ``cpu``: the runs' CPU seconds."""
    killed = sum(o.status == "killed" for o in outcomes)
    wider = sum(o.status == "killed" and o.wider for o in outcomes)
    modules = len({o.mutant.module for o in outcomes})
    # wall time depends on what else the machine runs: the CPU seconds and the load say how much
    machine = (f" ({cpu:.0f} CPU s; 1-min load average {os.getloadavg()[0]:.1f} at the end, "
               f"{os.cpu_count()} cores)" if cpu is not None else "")
    head = (f"Mutation testing: {len(outcomes)} named mutants at the verdict points of {modules} modules "
            f"(`benchmarks/mutants.py`); {killed} killed by `make test`'s tests"
            + (f" ({wider} only by the whole suite)" if wider else "")
            + f", {len(outcomes) - killed} not; {seconds:.0f} s on {jobs} "
            f"{'process' if jobs == 1 else 'processes'}{machine}.")
    rows = ["| mutant | where | the slip, and what it breaks | killed? | by |", "|---|---|---|---|---|"]
    for o in outcomes:
        where = f"{o.mutant.module.removeprefix('pytest_ckpt/')}:{o.line}"
        done = {"killed": "yes", "survived": "**no**", "timeout": "**timeout**", "unjudged": "**unjudged**"}[o.status]
        by = f"`{o.by}`" + (" (whole suite)" if o.wider else "") if o.by else "-"
        rows.append(f"| {o.mutant.name} | {where} | {_cell(o.mutant.why)} | {done} | {_cell(by)} |")
    return "\n".join([head, "", *rows]) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--only", help="comma-separated mutant names (prints the table, README untouched)")
    parser.add_argument("--no-wider", action="store_true", help="targeted tests only: no whole-suite run")
    parser.add_argument("--check", action="store_true", help="check that every mutant applies, run nothing")
    parser.add_argument("--list", action="store_true", help="list the mutants")
    args = parser.parse_args(argv)
    chosen = list(MUTANTS)
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - {m.name for m in MUTANTS})
        if unknown:
            parser.error(f"no mutant named {', '.join(unknown)}")
        chosen = [m for m in MUTANTS if m.name in names]
    if args.list:
        for m in chosen:
            print(f"{m.name:32} {m.module}: {m.why}")
        return 0
    try:
        for m in chosen:
            mutate(ROOT, m)
        if args.check:
            print(f"{len(chosen)} mutants apply, each once")
            return 0
        start = time.perf_counter()
        outcomes = run_all(ROOT, chosen, TESTS, jobs=args.jobs, wider=() if args.no_wider else WIDER)
    except (StaleMutant, DriverError) as e:
        print(f"make mutation: {e}", file=sys.stderr)
        return 2
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = table(outcomes, time.perf_counter() - start, args.jobs, children.ru_utime + children.ru_stime)
    survivors = [f"{o.mutant.name} ({o.mutant.module}): {o.status}" for o in outcomes if o.status != "killed"]
    if args.only:
        print(report)
    else:
        harness.publish("mutation", MARK_START, MARK_END, report, survivors, what="survivor")
    return 0 if not survivors else 1


if __name__ == "__main__":
    sys.exit(main())
