"""What every benchmark shares: interleaved medians, memory read from /proc, child processes, rows."""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass
class Timing:
    """Seconds of one case over interleaved rounds."""

    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> str:
        # min-max around the median: how noisy the shared machine was
        return f"{min(self.times):.3g}-{max(self.times):.3g}"


def interleaved(cases: dict[str, Callable[[], Any]], *, rounds: int, warmup: int = 1) -> dict[str, Timing]:
    """Run each case once per round, the order rotating, so load on the shared machine hits all alike."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            gc.collect()
            start = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - start)
    return {n: Timing(t) for n, t in times.items()}


# -- memory, from the operating system ------------------------------------------------------

def proc_status() -> dict[str, int]:
    """``/proc/self/status`` memory fields in bytes (VmRSS, VmHWM, RssAnon, RssFile)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def io_counters() -> dict[str, int]:
    """``/proc/self/io``: rchar (bytes passed to read calls) and read_bytes (fetched from storage)."""
    out = {}
    with open("/proc/self/io") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = int(value)
    return out


def memory_of(fn: Callable[[], Any]) -> dict[str, float]:
    """Peak RSS and peak anonymous memory added while ``fn`` runs (MB, from /proc).

    The kernel's peak (VmHWM) is reset first (``clear_refs`` 5); anonymous
    memory has no kernel peak, so a thread samples RssAnon every millisecond
    (torch releases the GIL in its kernels).
    """
    gc.collect()
    base = proc_status()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    peak_anon = base["RssAnon"]
    stop = threading.Event()

    def sample():
        nonlocal peak_anon
        while not stop.is_set():
            peak_anon = max(peak_anon, proc_status()["RssAnon"])
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = fn()
    after = proc_status()
    stop.set()
    sampler.join()
    peak_anon = max(peak_anon, after["RssAnon"])
    del result
    mb = 1 / 2**20
    return {
        "peak_rss_mb": (after["VmHWM"] - base["VmRSS"]) * mb,
        "peak_anon_mb": (peak_anon - base["RssAnon"]) * mb,
        "base_rss_mb": base["VmRSS"] * mb,
    }


def in_child(script: str, *args: str, timeout: float = 300) -> Any:
    """Run ``python script *args`` in a fresh interpreter; its last stdout line is JSON."""
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(script).name} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(cases: dict[str, Callable[[list[str]], dict]]) -> None:
    """Entry of a benchmark module run as a child: ``script CASE ARGS...`` prints one JSON line."""
    case, *args = sys.argv[1:]
    print(json.dumps(cases[case](args)))


# -- rows of the results table --------------------------------------------------------------

@dataclass
class Row:
    """One figure beside its target and peers. ``value`` and ``limit`` share ``unit``."""

    target: str
    measure: str
    value: float
    unit: str
    limit: float | None = None
    peers: dict[str, str] = field(default_factory=dict)
    note: str = ""
    spread: str = ""
    #: the 1-min load average before and after the target that measured it (run.py fills it)
    load: tuple[float, float] | None = None

    @property
    def met(self) -> bool | None:
        if self.limit is None:
            return None
        return self.value <= self.limit

    def to_dict(self) -> dict:
        return {**asdict(self), "met": self.met}


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MB":
        return f"{value:.0f} MB" if abs(value) >= 10 else f"{value:.1f} MB"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "GB/s":
        return f"{value:.2f} GB/s"
    if unit == "B":
        return f"{value / 2**20:.2f} MiB" if value >= 2**20 else f"{value:.0f} B"
    return f"{value:g} {unit}"


def free_disk_gb(path: Path) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 1e9


def fill_readme(start: str, end: str, text: str) -> None:
    """Replace what README.md holds between the ``start`` and ``end`` markers with ``text``."""
    readme = ROOT / "README.md"
    if not readme.exists():
        return
    content = readme.read_text()
    if start in content and end in content:
        head, rest = content.split(start, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{start}\n{text.rstrip()}\n{end}{tail}")


def publish(name: str, start: str, end: str, report: str, problems: list[str], what: str = "failure") -> None:
    """Print a table ``report`` (and the first ``problems``), keep it as ``results/<name>.md``, and
    put it into README.md between the ``start`` and ``end`` markers."""
    print(report)
    if problems:
        print(f"{len(problems)} {what}(s), first ones:", *problems[:5], sep="\n\n")
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.md").write_text(report)
    fill_readme(start, end, report)


def map_jobs(fn: Callable[[Any], Any], jobs: list, processes: int) -> list:
    """``[fn(job) for job in jobs]``, over ``processes`` fresh (spawned) processes when more than one."""
    if processes <= 1:
        return [fn(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, jobs))
