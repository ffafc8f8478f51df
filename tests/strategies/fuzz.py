"""Hostile-input fuzzing over every format: damaged files and directories, judged by an independent
reader (torch.load, safetensors, dcp.load), never by pytest-ckpt itself.

Shared by the fast fuzz test (``tests/strategies/test_fuzz.py``) and ``benchmarks/fuzz.py``.
Each case damages one file of a pristine checkpoint (one file, or one file of a sharded or DCP
directory) with a :class:`~tests.strategies.corruption.Corruption` drawn from a seeded RNG, runs
every reader under the per-case time limit and the audit hook, and says what came of it:

* ``clear error``: refused with a ``CheckpointError`` naming the file, consistently;
* ``correct``: read, and what was read agrees with the independent reader;
* ``wrong``: a verdict the independent reader contradicts (:func:`~.corruption.judge`);
* ``raw``: another exception escaped; ``hang``: a reader ran past the limit;
* ``code executed``: an audit event of a program started or a pickle global resolved.
"""

from __future__ import annotations

import os
import random
import stat
import tempfile
import traceback
import warnings
from collections import Counter
from pathlib import Path

import torch

import pytest_ckpt as pc
from tests.strategies import corruption

#: every format a checkpoint comes in: the single-file writers, an HF sharded directory, DCP
FORMATS = (*corruption.WRITERS, "hf-sharded", "dcp")
OUTCOMES = ("clear error", "correct", "wrong", "raw", "hang", "code executed")


def write(fmt: str, sd: dict[str, torch.Tensor], directory: Path) -> Path:
    """A pristine checkpoint of ``sd`` in ``fmt`` under ``directory``: a file or a directory."""
    if fmt in corruption.WRITERS:
        return corruption.write(fmt, sd, directory / "ckpt")
    out = directory / "ckpt"
    out.mkdir()
    if fmt == "hf-sharded":
        from safetensors.torch import save_file

        names = sorted(sd)
        half = len(names) // 2
        weight_map = {}
        for i, part in enumerate((names[:half], names[half:]), 1):
            shard = f"model-{i:05d}-of-00002.safetensors"
            save_file({k: sd[k].contiguous().clone() for k in part}, str(out / shard))
            weight_map.update({k: shard for k in part})
        import json

        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=2))
        return out
    if fmt == "dcp":
        import torch.distributed.checkpoint as dcp

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.save({k: v.clone() for k, v in sd.items()}, checkpoint_id=str(out), no_dist=True)
        return out
    raise ValueError(f"unknown format {fmt!r}")


def pristine(fmt: str, sd: dict[str, torch.Tensor]) -> dict[str, bytes]:
    """The files of a pristine checkpoint: ``{relative path: bytes}`` (``""``: the file itself)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write(fmt, sd, Path(tmp))
        if path.is_file():
            return {path.name: path.read_bytes()}
        return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def draw(rng: random.Random, files: dict[str, bytes]) -> tuple[str, corruption.Corruption]:
    """One file of the checkpoint, and one corruption of it."""
    name = rng.choice(sorted(files))
    size = len(files[name])
    kind = rng.choice(corruption.KINDS)
    at = rng.randrange(max(size, 1))
    data = {
        "truncate": (),
        "flip": tuple(rng.randrange(1, 256) for _ in range(rng.randint(1, 4))),
        "zero": (rng.randint(1, 64),),
        "trailing": tuple(rng.randrange(256) for _ in range(rng.randint(1, 64))),
    }[kind]
    return name, corruption.Corruption(kind, size if kind == "trailing" else at, data)


def run_case(fmt: str, files: dict[str, bytes], name: str, c: corruption.Corruption,
             sd: dict[str, torch.Tensor]) -> tuple[str, str | None]:
    """``(outcome, problem)`` of one damaged checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        if fmt in corruption.WRITERS:
            path = Path(tmp) / name
            path.write_bytes(c.apply(files[name]))
        else:
            path = Path(tmp) / "ckpt"
            path.mkdir()
            for n, blob in files.items():
                (path / n).write_bytes(c.apply(blob) if n == name else blob)
        try:
            out = corruption.read_back(path, sd)
        except corruption.Hang as e:
            return "hang", str(e)
        except AssertionError as e:
            if "tried to run code" in str(e):
                return "code executed", str(e)
            return "raw", str(e)
        except Exception:  # noqa: BLE001 - any other exception escaping a reader is the finding
            return "raw", traceback.format_exc(limit=3)
    problem = corruption.judge(c, out, sd, checksummed=fmt in corruption.CHECKSUMMED)
    if problem:
        return "wrong", problem
    return ("clear error" if isinstance(out["load_state_dict"], pc.CheckpointError) else "correct"), None


def modes_widened(tmp: Path) -> int:
    """How many of pc.save's replacements of a 0600 / 0640 file (both suffixes, and through a
    symlink) left it with wider permissions."""
    widened = 0
    for suffix in (".pt", ".safetensors"):
        for mode in (0o600, 0o640):
            target = tmp / f"mode{mode:o}{suffix}"
            link = tmp / f"link{mode:o}{suffix}"
            pc.save({"w": torch.ones(2)}, target)
            os.chmod(target, mode)
            os.symlink(target.name, link)
            for path in (target, link):
                pc.save({"w": torch.zeros(2)}, path)
                after = stat.S_IMODE(os.stat(target).st_mode)
                widened += bool(after & ~mode) or not link.is_symlink()
    return widened


def fuzz(formats: tuple[str, ...], cases: int, seed: int = 0, *, keep: int = 3) -> tuple[dict[str, Counter], list[str]]:
    """``cases`` damaged checkpoints per format: outcome counts per format, the first problems."""
    sd = corruption.original()
    rows: dict[str, Counter] = {}
    problems: list[str] = []
    for fmt in formats:
        rng = random.Random(f"{seed}/{fmt}")
        files = pristine(fmt, sd)
        counts = Counter({k: 0 for k in OUTCOMES})
        for _ in range(cases):
            name, c = draw(rng, files)
            outcome, problem = run_case(fmt, files, name, c, sd)
            counts[outcome] += 1
            if problem and len(problems) < keep:
                problems.append(f"{fmt} {name} {c!r}: {problem}")
        rows[fmt] = counts
    return rows, problems


def table(rows: dict[str, Counter], widened: int) -> list[str]:
    lines = ["| format | tried | clear error | correct | wrong | raw | hang | code executed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    total = Counter()
    for fmt, c in rows.items():
        total.update(c)
        lines.append(f"| {fmt} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in OUTCOMES) + " |")
    lines.append(f"| **all** | **{sum(total.values())}** | " + " | ".join(f"**{total[k]}**" for k in OUTCOMES) + " |")
    lines += ["", f"Modes widened by pc.save replacing a 0600 or 0640 file (directly and through a symlink): {widened}."]
    return lines
