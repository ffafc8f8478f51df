"""Hostile-input fuzzing over every format: damaged files and directories, judged by an independent
reader (torch.load, safetensors, dcp.load, transformers' from_pretrained), never by pytest-ckpt itself.

Shared by the fast fuzz test (``tests/strategies/test_fuzz.py``) and ``benchmarks/fuzz.py``.
Each case damages a pristine checkpoint (one file, or a file of a sharded, save_pretrained or DCP
directory) with an operator drawn from a seeded RNG: bytes cut, flipped, zeroed or appended
(:class:`~tests.strategies.corruption.Corruption`), or one that knows the format
(:mod:`tests.strategies.operators`: a zip field, a compressed record, a safetensors header field,
a file of a directory removed, torn or swapped with another step's). Every reader runs under the
per-case time limit and the audit hook, and the case comes out as one of :data:`OUTCOMES`:

* ``clear error``: refused with a ``CheckpointError`` naming the file, consistently, and the
  independent reader does not read the checkpoint as saved;
* ``correct``: read, and what was read agrees with the independent reader;
* ``refused, explained``: refused although the independent reader reads it as saved, for a
  reason other evidence shows (:data:`~.corruption.EXPLAINED`: a CRC torch does not check, ...);
* ``false alarm``: refused although the independent reader reads it as saved, unexplained;
* ``wrong``: a verdict the independent reader contradicts (:func:`~.corruption.judge`);
* ``raw``: another exception escaped; ``hang``: a reader ran past the limit;
* ``code executed``: an audit event of a program started or a pickle global resolved.
"""

from __future__ import annotations

import json
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
from tests.strategies import corruption, operators

#: every format a checkpoint comes in: the single-file writers, an HF sharded directory, a
#: transformers save_pretrained directory, DCP
DIRECTORIES = ("hf-sharded", "hf-pretrained", "dcp")
FORMATS = (*corruption.WRITERS, *DIRECTORIES)
OUTCOMES = ("clear error", "correct", "refused, explained", "false alarm", "wrong", "raw", "hang", "code executed")
#: the outcomes that are findings: each must stay at 0
BAD = ("false alarm", "wrong", "raw", "hang", "code executed")
ZIPS = ("pc.save.pt", "torch.save")


def kinds(fmt: str) -> tuple[str, ...]:
    """The operators that apply to ``fmt``."""
    out = corruption.KINDS
    if fmt in ZIPS:
        out += operators.ZIP_KINDS
    if fmt in ("pc.save.safetensors", "safetensors", "hf-sharded", "hf-pretrained"):
        out += operators.HEADER_KINDS
    if fmt in DIRECTORIES:
        out += ("directory",)
    return out


def write(fmt: str, sd: dict[str, torch.Tensor], directory: Path) -> Path:
    """A pristine checkpoint of ``sd`` in ``fmt`` under ``directory``: a file or a directory.
    (``hf-pretrained`` saves a tiny GPT-2 built from the seed in ``sd["seed"]``.)"""
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
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=2))
        return out
    if fmt == "hf-pretrained":
        tiny_gpt2(int(sd["seed"])).save_pretrained(out, max_shard_size="2KB")
        return out
    if fmt == "dcp":
        import torch.distributed.checkpoint as dcp

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.save({k: v.clone() for k, v in sd.items()}, checkpoint_id=str(out), no_dist=True)
        return out
    raise ValueError(f"unknown format {fmt!r}")


def tiny_gpt2(seed: int):
    """A GPT-2 of a few thousand parameters (five 2 KB shards when saved), its weights from ``seed``."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=8, n_head=2, vocab_size=16, n_positions=8,
                                      bos_token_id=0, eos_token_id=1))


def pristine(fmt: str, sd: dict[str, torch.Tensor]) -> dict[str, bytes]:
    """The files of a pristine checkpoint: ``{file name: bytes}``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write(fmt, sd, Path(tmp))
        if path.is_file():
            return {path.name: path.read_bytes()}
        return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def expected(fmt: str, files: dict[str, bytes], sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a reader must read from the pristine files: ``sd``, or (``hf-pretrained``) the tensors
    its shards hold, read by the safetensors library."""
    if fmt != "hf-pretrained":
        return sd
    from safetensors.torch import load

    out: dict[str, torch.Tensor] = {}
    for name, blob in files.items():
        if name.endswith(".safetensors"):
            out.update(load(blob))
    return out


def draw(rng: random.Random, fmt: str, files: dict[str, bytes], other: dict[str, bytes]) -> operators.Case:
    """One damaged version of the checkpoint: an operator that applies to ``fmt``, drawn at random
    (``other``: the same checkpoint at another step, for the directory operators)."""
    kind = rng.choice(kinds(fmt))
    if kind == "directory":
        return operators.directory(rng, files, other)
    if kind in operators.HEADER_KINDS:
        name = rng.choice(sorted(n for n in files if n.endswith(".safetensors")))
        return operators.header_field(rng, name, files[name])
    name = rng.choice(sorted(files))
    if kind == "zip field":
        return operators.zip_field(rng, name, files[name])
    if kind == "compressed":
        return operators.compressed(rng, name, files[name])
    size = len(files[name])
    # a cut in a JSON file's trailing newline leaves the document whole: no damage to find there
    whole = len(files[name].rstrip()) if name.endswith(".json") and kind == "truncate" else size
    at = rng.randrange(max(whole, 1))
    data = {
        "truncate": (),
        "flip": tuple(rng.randrange(1, 256) for _ in range(rng.randint(1, 4))),
        "zero": (rng.randint(1, 64),),
        "trailing": tuple(rng.randrange(256) for _ in range(rng.randint(1, 64))),
    }[kind]
    return operators.byte_case(name, corruption.Corruption(kind, size if kind == "trailing" else at, data))


def run_case(fmt: str, files: dict[str, bytes], case: operators.Case,
             sd: dict[str, torch.Tensor]) -> tuple[str, str | None]:
    """``(outcome, problem or explanation)`` of one damaged checkpoint."""
    damaged = case.apply(files)
    with tempfile.TemporaryDirectory() as tmp:
        if fmt in corruption.WRITERS:
            path = Path(tmp) / case.file
            path.write_bytes(damaged[case.file])
        else:
            path = Path(tmp) / "ckpt"
            path.mkdir()
            for n, blob in damaged.items():
                (path / n).write_bytes(blob)
        try:
            out = corruption.read_back(path, sd, reference="from_pretrained" if fmt == "hf-pretrained" else None)
        except corruption.Hang as e:
            return "hang", str(e)
        except AssertionError as e:
            if "tried to run code" in str(e):
                return "code executed", str(e)
            return "raw", str(e)
        except Exception:  # noqa: BLE001 - any other exception escaping a reader is the finding
            return "raw", traceback.format_exc(limit=3)
        problem = corruption.judge(case, out, sd, checksummed=fmt in corruption.CHECKSUMMED)
        if problem:
            return "wrong", problem
        if corruption.refused_intact(out, sd):
            why = corruption.explain(path, files, sd)
            refusal = next(str(out[k]) for k in ("load_state_dict", "verify", "schema", "diff")
                           if isinstance(out[k], pc.CheckpointError))
            return ("refused, explained", why) if why else ("false alarm", f"refused ({refusal}), yet read intact")
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


def state(fmt: str, step: int) -> dict[str, torch.Tensor]:
    """The state dict saved at ``step`` (another step: other values, the same names and shapes)."""
    if fmt == "hf-pretrained":
        return {"seed": torch.tensor(step)}
    sd = corruption.original()
    if step:
        sd = {k: v + step if v.dtype.is_floating_point else v for k, v in sd.items()}
        sd["lm_head.weight"] = sd["embed.weight"]
    return sd


def fuzz(formats: tuple[str, ...], cases: int, seed: int = 0, *, keep: int = 3
         ) -> tuple[dict[tuple[str, str], Counter], list[str]]:
    """``cases`` damaged checkpoints per format: outcome counts per (format, operator), the first
    problems; explained refusals are counted by their reason under ``("explained", reason)``."""
    rows: dict[tuple[str, str], Counter] = {}
    problems: list[str] = []
    for fmt in formats:
        rng = random.Random(f"{seed}/{fmt}")
        files, other = pristine(fmt, state(fmt, 0)), pristine(fmt, state(fmt, 1))
        sd = expected(fmt, files, state(fmt, 0))
        for _ in range(cases):
            case = draw(rng, fmt, files, other)
            outcome, note = run_case(fmt, files, case, sd)
            counts = rows.setdefault((fmt, case.kind), Counter({k: 0 for k in OUTCOMES}))
            counts[outcome] += 1
            if outcome == "refused, explained":
                rows.setdefault(("explained", note), Counter())["cases"] += 1
            elif note and len(problems) < keep:
                problems.append(f"{fmt} {case!r}: {note}")
    return rows, problems


def table(rows: dict[tuple[str, str], Counter], widened: int) -> list[str]:
    """The outcome table by format, then by operator, then the explained refusals by reason."""
    head = ("| {} | tried | clear error | correct | refused, read intact: explained | false alarm "
            "| wrong | raw | hang | code executed |")
    lines: list[str] = []
    for title, part in (("format", 0), ("operator", 1)):
        grouped: dict[str, Counter] = {}
        for key, c in rows.items():
            if key[0] != "explained":
                grouped.setdefault(key[part], Counter()).update(c)
        total = Counter()
        lines += [head.format(title), "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, c in grouped.items():
            total.update(c)
            lines.append(f"| {name} | {sum(c[k] for k in OUTCOMES)} | " + " | ".join(str(c[k]) for k in OUTCOMES) + " |")
        lines.append(f"| **all** | **{sum(total[k] for k in OUTCOMES)}** | "
                     + " | ".join(f"**{total[k]}**" for k in OUTCOMES) + " |")
        lines.append("")
    explained = {key[1]: c["cases"] for key, c in rows.items() if key[0] == "explained"}
    if explained:
        lines.append("Refusals of files the independent reader reads as saved, and what shows each is right:")
        lines.append("")
        lines += [f"- {n} × {reason}: {corruption.EXPLAINED[reason]}" for reason, n in sorted(explained.items())]
        lines.append("")
    lines += [f"Modes widened by pc.save replacing a 0600 or 0640 file (directly and through a symlink): {widened}."]
    return lines
