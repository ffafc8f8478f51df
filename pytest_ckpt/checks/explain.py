"""Why a round trip failed, said about the code at fault: your save or your load.

The two sides of a round trip get their own nouns ("the saved model", "the reloaded model",
"the checkpoint", "the model your load built") and a fix aimed at the side that must change.
When the project's load raises, its own error is the evidence: the keys it names rebuild the
model that load built (:mod:`pytest_ckpt.compare.load_error`), and the ordinary diff rules
explain it against the file. Before blaming the load, the file is compared with the saved
model: when the file itself is wrong, the save is.
"""

from __future__ import annotations

import copy
import linecache
import logging
import os
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .. import api
from ..checkpoint.canonical import WRAPPER_PREFIXES, added_by
from ..checkpoint.notes import Note
from ..checkpoint.resolve import module_view, resolve
from ..checkpoint.view import View
from ..compare import load_error
from ..report.diff import CheckpointDiff
from ..errors import PACKAGE_DIR

SAVED = "saved model"
RELOADED = "reloaded model"
BUILT = "model your load built"
CHECKPOINT = "checkpoint"



# -- the sides -----------------------------------------------------------------------------------

def saved_side(reference: nn.Module | Mapping[str, torch.Tensor]) -> View:
    """The model training saved: always the expected side."""
    if isinstance(reference, nn.Module):
        view = module_view(reference, label=f"the {SAVED} ({type(reference).__name__})")
    else:
        view = resolve(dict(reference), values=True, label=f"the {SAVED}")
    view.expected_noun = SAVED
    return view


def reloaded_side(model: nn.Module | Mapping[str, torch.Tensor]) -> View:
    """What the project's load returned (reshard-N: the state gathered from the loading ranks); its
    differences are the load's doing."""
    if isinstance(model, nn.Module):
        view = module_view(model, label=f"the {RELOADED} ({type(model).__name__})")
    else:
        view = resolve(dict(model), values=True, label=f"the {RELOADED}")
    view.noun, view.expected_noun, view.made_by = RELOADED, RELOADED, "load"
    return view


def file_side(path: Path, *, like: View, values: bool, made_by: str | None = None) -> View:
    """The file your save wrote, read as pytest-ckpt reads it (located, wrappers stripped)."""
    view = resolve(path, values=values, like=like, label=f"the {CHECKPOINT} ({Path(path).name})")
    view.made_by = made_by
    return view


def add_evidence(reloaded: View, path: Path, *, like: View, fresh: Mapping[str, torch.Tensor] | None) -> None:
    """What the diff rules need to name a load's own cause: the file it read, as pytest-ckpt reads it
    (its wrapper prefixes explain a load that matched no name), and a freshly built model's tensors
    (a reloaded tensor equal to one was never loaded)."""
    try:
        reloaded.read_from = file_side(path, like=like, values=False)
    except Exception:  # noqa: BLE001 - a format only the project reads: no evidence from it
        reloaded.read_from = None
    reloaded.fresh = fresh


def differing(diff: CheckpointDiff) -> set[str]:
    """Every name a diff finds different, whatever the way."""
    return {*diff.missing, *diff.unexpected, *diff.shape, *diff.dtype, *diff.values, *diff.dataless,
            *(n for group in diff.ties for n in group)}


def against_file(path: Path, reloaded: View, *, like: View, dtype: torch.dtype | None) -> CheckpointDiff | None:
    """The reloaded model against the file it was loaded from (after the declared cast, as the load
    makes it): what the load itself changed. ``None`` when pytest-ckpt cannot read the file."""
    try:
        file = file_side(path, like=like, values=True)
        if dtype is not None:
            dtypes = {name: spec.dtype for name, spec in reloaded.schema.items()}
            file = resolve(cast(dict(file.tensors), dtype, like=dtypes), values=True, label=file.label)
    except Exception:  # noqa: BLE001 - unreadable: the verdict stands without it
        return None
    file.expected_noun = CHECKPOINT
    return diff(file, reloaded)


def carried(diff: CheckpointDiff, own: CheckpointDiff | None) -> str:
    """The reloaded model's difference when the file itself is wrong: what the checkpoint holds,
    carried through the load, has no fix of its own (the save is at fault); what the load changed
    besides (``own``: the reloaded model against the file) keeps its causes and fixes."""
    verdict = re.sub(r" \(\d+ causes?\)$", "", str(diff).splitlines()[0])
    if own is None:
        return f"and so {verdict}"
    if own.ok:
        return f"and so {verdict}, as the checkpoint holds them (no cause of the load's own)"
    causes = [n for n in own.notes if not n.info]
    lines = [f"and so {verdict}; and your load changes what the checkpoint holds:"]
    for note in causes:
        lines.append(f"  [{note.kind}] {' '.join(note.text.split())}")
        if note.fix:
            lines.append(f"      fix: {' '.join(note.fix.split())}")
    if not causes:
        lines.append(f"  {own}")
    return "\n".join(lines)


def cast(reference: Any, dtype: torch.dtype | None, like: Mapping[str, torch.dtype] | None = None) -> Any:
    """The saved model as a declared cast leaves it: floating tensors rounded to ``dtype``. ``like``:
    the dtypes the load returned, by name; a tensor it holds in another floating dtype is rounded
    to ``dtype`` and back to that one (a ``.half()`` save loaded into a float32 model).

    >>> w = {"w": torch.tensor([1/3])}
    >>> cast(w, torch.float16)["w"].dtype, cast(w, torch.float16, like={"w": torch.float32})["w"].item()
    (torch.float16, 0.333251953125)
    """
    if dtype is None:
        return reference
    like = like or {}

    def back(name: str) -> torch.dtype:
        wanted = like.get(name)
        return wanted if wanted is not None and wanted.is_floating_point else dtype

    if isinstance(reference, nn.Module):
        model = copy.deepcopy(reference).to(dtype)  # .to() keeps tied parameters tied
        for name, tensor in model.state_dict(keep_vars=True).items():
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.dtype != back(name):
                tensor.data = tensor.data.to(back(name))  # a tie is one object: cast once for all its names
        return model
    return {k: v.to(dtype).to(back(k)) if v.is_floating_point() else v for k, v in reference.items()}


def diff(expected: View, actual: View, **kw) -> CheckpointDiff:
    return api.diff(expected, actual, **kw)


# -- what failed ---------------------------------------------------------------------------------

def lead(diff: CheckpointDiff | None) -> str:
    """``[kind] text`` of the first cause; informational notes never lead."""
    if diff is None:
        return ""
    note = next((n for n in diff.notes if not n.info), None)
    return f"[{note.kind}] {' '.join(note.text.split())}" if note is not None else ""


def check_file(reference: Any, path: Path, *, atol: float, rtol: float, config: Any,
               only: Any = None) -> CheckpointDiff | None:
    """The saved model against the file your save wrote; ``None`` when it cannot be read (the
    load's own error then says more than we could)."""
    try:
        expected = saved_side(reference)
        actual = file_side(path, like=expected, values=True, made_by="save")
        return diff(expected, actual, atol=atol, rtol=rtol, configs=(config, None), only=only)
    except Exception:  # noqa: BLE001 - an unreadable file is the load's problem to report
        return None


@dataclass
class Raised:
    """A project's load that raised: where, and its message shortened."""

    exc: BaseException
    #: ``proj.py:22 in load_for_inference`` and that line's source, when a user frame is known
    where: str
    line: str
    #: what transformers logged while loading (its loading report), for the parser
    log: str = ""

    def text(self, what: str = "your load") -> str:
        message = load_error.shorten(str(self.exc)).strip("\n")
        first, _, rest = message.partition("\n")
        out = [f"{what} raised at {self.where}:" if self.where else f"{what} raised:"]
        if self.line:
            out.append(f"    {self.line}")
        out.append(f"  {type(self.exc).__name__}: {first}")
        out += [f"  {line}" for line in rest.splitlines()]
        return "\n".join(out)


def raised(exc: BaseException, log: str = "") -> Raised:
    frame = user_frame(exc.__traceback__)
    if frame is None:
        return Raised(exc, "", "", log)
    filename, lineno, function = frame
    line = linecache.getline(filename, lineno).strip()
    return Raised(exc, f"{_short_path(filename)}:{lineno} in {function}", line, log)


def user_frame(tb) -> tuple[str, int, str] | None:
    """``(file, line, function)`` of the deepest frame that is the project's own code: not
    pytest-ckpt's, torch's or another installed package's, nor the standard library's."""
    found = None
    skip = _library_dirs()
    while tb is not None:
        code = tb.tb_frame.f_code
        filename = code.co_filename
        if not filename.startswith("<") and not filename.startswith(skip):
            found = (filename, tb.tb_lineno, code.co_name)
        tb = tb.tb_next
    return found


def _library_dirs() -> tuple[str, ...]:
    dirs = {PACKAGE_DIR, os.path.dirname(torch.__file__) + os.sep}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(os.path.realpath(path) + os.sep)
            dirs.add(path + os.sep)
    return tuple(dirs)


def _short_path(filename: str) -> str:
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return rel if not rel.startswith("..") else filename


class TransformersLog(logging.Handler):
    """While loading, what ``transformers`` logs (its loading report names every key)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(record.getMessage())
        except Exception:  # noqa: BLE001 - a log record we cannot format is no evidence
            pass

    def __enter__(self) -> "TransformersLog":
        logger = logging.getLogger("transformers")
        self._level = logger.level
        if logger.getEffectiveLevel() > logging.WARNING:  # set_verbosity_error() silences the report
            logger.setLevel(logging.WARNING)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logger = logging.getLogger("transformers")
        logger.removeHandler(self)
        logger.setLevel(self._level)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


# -- a load that raised, explained ---------------------------------------------------------------

@dataclass
class Explanation:
    """What the report says about a load that raised: its diff (the evidence), its lead cause."""

    diff: CheckpointDiff | None
    cause: str
    body: str


def explain_raised(failure: Raised, path: Path, reference: Any, *, config: Any,
                   wrapped_by: tuple[str, ...]) -> Explanation | None:
    """The project's load error, explained against the file: ``None`` when the error names no keys.

    The error's keys rebuild the model the load built; the diff rules compare it with the
    file. When nothing differs but how the file is read (nested, wrapper prefixes), that is the
    cause: the load must read the file the way the save writes it.
    """
    error = load_error.parse(str(failure.exc), failure.log)
    if error is None:
        return None
    try:
        like = saved_side(reference)
        file = file_side(path, like=like, values=False)
    except Exception:  # noqa: BLE001 - unreadable: the load's own error stands alone
        return None
    built = load_error.built_view(error, file, label=f"the {BUILT}" + (f" ({error.model})" if error.model else ""),
                                  noun=BUILT, built="your load built")
    result = diff(built, file, values=False, configs=(None, config))
    if not result.ok:
        return Explanation(result, lead(result), str(result))
    # nothing differs but where and under which names the file holds the weights
    notes = reading_notes(error, file, wrapped_by)
    if not notes:
        return None
    result.notes = notes + [n for n in result.notes if n.kind not in {m.kind for m in notes}]
    body = [f"the {CHECKPOINT} holds every tensor the {BUILT} needs "
            f"({len(built.schema)}, with their shapes and dtypes), read as pytest-ckpt reads it:"]
    for note in result.notes:
        body.append(f"  [{note.kind}] {note.text}")
        if note.fix:
            body.append(f"      fix: {note.fix}")
    return Explanation(result, lead(result), "\n".join(body))


def reading_notes(error: "load_error.LoadError", file: View, wrapped_by: tuple[str, ...]) -> list[Note]:
    """The file holds what the load wants, but the load read it elsewhere or under other names:
    one cause per step it missed, told by the names its error quotes (the level above the
    weights: ``epoch``, ``model``; a wrapper prefix left on every name)."""
    notes = []
    schema = file.schema
    unexpected = error.unexpected
    if schema.located_at:
        head = str(schema.located_at[0])
        if any(u == head or u.startswith(head + ".") for u in unexpected):
            where = ".".join(str(p) for p in schema.located_at)
            index = "".join(f"[{p!r}]" for p in schema.located_at)
            notes.append(Note(
                "nested",
                f"the weights are nested at {where} in the {CHECKPOINT} ({len(schema)} tensors); "
                "your load passes the level above them to load_state_dict",
                fix=f"read checkpoint{index} in your load, as your save writes it "
                    "(pc.load_into(model, path) finds it)"))
    left = {p for p in map(lambda u: _wrapper_prefix(u, schema.specs), unexpected) if p}
    if len(left) == 1:
        prefix = left.pop()
        parts = tuple(p for p in _split_prefixes(prefix))
        if all(p in wrapped_by for p in parts):
            text = (f"every name your load passes starts with {prefix} ({added_by(parts)}: the "
                    "model your save was given is wrapped); your load leaves it on")
            fix = (f"strip {prefix} in your load (consume_prefix_in_state_dict_if_present; "
                   "pc.load_into(model, path) strips any order), or save the unwrapped model")
        else:
            text = (f"every name in the {CHECKPOINT} starts with {prefix} ({added_by(parts)}), "
                    "though the model your save was given is not wrapped: your save adds it")
            fix = f"save the unwrapped model's state_dict() (without {prefix}), or strip it in your load"
        notes.append(Note("prefix", text, fix=fix))
    return notes


def _wrapper_prefix(name: str, known) -> str:
    """The wrapper prefixes in front of ``name`` that keep it from being one of ``known``."""
    prefix = ""
    while name not in known:
        p = next((p for p in WRAPPER_PREFIXES if name.startswith(p) and name != p), None)
        if p is None:
            return ""
        name, prefix = name[len(p):], prefix + p
    return prefix


def _split_prefixes(prefix: str) -> list[str]:
    """``"module._orig_mod."`` -> ``["module.", "_orig_mod."]``."""
    out = []
    while prefix:
        p = next(p for p in WRAPPER_PREFIXES if prefix.startswith(p))
        out.append(p)
        prefix = prefix[len(p):]
    return out


__all__ = ["SAVED", "RELOADED", "BUILT", "saved_side", "reloaded_side", "file_side", "add_evidence", "differing", "against_file", "carried", "cast",
           "lead", "check_file", "Raised", "raised", "user_frame", "TransformersLog",
           "Explanation", "explain_raised", "reading_notes"]
