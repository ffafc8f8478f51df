"""A ``load`` that expected a wrapper where the check hands it the bare module, said as one cause.

Real projects restore the weights into the bare model and wrap it afterwards (API §4.1), so the
resume variations wrap the trained modules only once ``load`` has returned. A load that reaches
into a wrapper (``run.model.module``), or that restores names the save wrote through one
(``_orig_mod.0.weight`` into a bare ``Net``), then raises; :func:`wrapper_cause` turns that error
into one ``[prefix]`` line naming the wrapper and the fix, instead of torch's key lists.

>>> from types import SimpleNamespace as NS
>>> m = NS(path="run.model", obj=NS())
>>> print(wrapper_cause(AttributeError("'Net' object has no attribute 'module'"), "DistributedDataParallel",
...                     [m], "train.load"))  # doctest: +NORMALIZE_WHITESPACE
[prefix] train.load reaches for .module, the DistributedDataParallel wrapper's attribute, on a bare Net:
load receives the run's modules unwrapped (the variation wraps them once load returns, as training that
restores before it wraps does); fix: restore into the module itself (getattr(model, "module", model)
where the same load also meets a wrapped one)
"""

from __future__ import annotations

import re
import traceback
from typing import Any, Sequence

from ..checkpoint.canonical import WRAPPERS, added_by
from ..compare.load_error import parse

#: the attribute through which a wrapper holds the module it wraps, with the prefix it adds to names
_ATTRIBUTES = {"module": "module.", "_orig_mod": "_orig_mod."}
_NO_ATTRIBUTE = re.compile(r"'(\w+)' object has no attribute '(\w+)'")


def wrapper_cause(exc: BaseException | None, wrapper: str, trained: Sequence[Any], load: str) -> str | None:
    """One ``[prefix] ...; fix: ...`` line when ``exc`` (what the project's ``load`` raised on the bare
    run) shows a load that expected the wrapper ``wrapper`` (its name, for the message); else ``None``.

    ``trained``: the run's trained modules (components with ``path`` and ``obj``), to name the one
    the error is about; ``load``: the load function's name."""
    if exc is None:
        return None
    text = str(exc)
    reached = _NO_ATTRIBUTE.search(text) if isinstance(exc, AttributeError) else None
    if reached and reached.group(2) in _ATTRIBUTES:
        cls, attr = reached.groups()
        return (f"[prefix] {load} reaches for .{attr}, the {wrapper} wrapper's attribute, on a bare {cls}"
                f"{_where(trained, cls)}: load receives the run's modules unwrapped (the variation wraps them "
                f"once load returns, as training that restores before it wraps does); fix: restore into the "
                f"module itself (getattr(model, \"{attr}\", model) where the same load also meets a wrapped one)")
    error = parse(text) if "Error(s) in loading state_dict" in text else None
    prefix = _carried(error.unexpected) if error else ""
    if not prefix:
        return None
    stripped = {n[len(prefix):] for n in error.unexpected}
    if error.missing and not stripped & set(error.missing):
        return None  # other names altogether: not the wrapper's doing
    unwrap = " ".join(f'getattr(model, "{p.rstrip(".")}", model)' for p in _split(prefix))
    return (f"[prefix] {load} restores a bare {error.model or 'module'}{_where(trained, error.model)} from names "
            f"that carry {added_by(_split(prefix))}'s prefix {prefix!r} ({len(error.unexpected)} unexpected"
            f"{f', {len(error.missing)} missing' if error.missing else ''}, {_at(exc)}): your save wrote the "
            f"wrapped model's names, and load receives the modules unwrapped (the variation wraps them once load "
            f"returns, as training that restores before it wraps does); fix: save the module inside the "
            f"wrapper ({unwrap}.state_dict()), or strip {prefix!r} from the names in your load "
            f"(pc.load_into(model, path) does)")


def _carried(names: Sequence[str]) -> str:
    """The run of wrapper prefixes every name starts with (``"_orig_mod.module."``), or ``""``."""
    prefix = ""
    while names:
        nxt = next((w.prefix for w in WRAPPERS if all(n.startswith(prefix + w.prefix) for n in names)), None)
        if nxt is None:
            break
        prefix += nxt
    return prefix


def _split(prefix: str) -> list[str]:
    out = []
    while prefix:
        w = next(w.prefix for w in WRAPPERS if prefix.startswith(w.prefix))
        out.append(w)
        prefix = prefix[len(w):]
    return out


def _where(trained: Sequence[Any], cls: str | None) -> str:
    """`` (run.model)`` when one trained module is of class ``cls``."""
    paths = [c.path for c in trained if type(c.obj).__name__ == cls]
    return f" ({paths[0]})" if len(paths) == 1 else ""


def _at(exc: BaseException) -> str:
    """``raised at train.py:42``: the last frame of the project's code in the error's traceback."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/torch/" not in f.filename and "/pytest_ckpt/" not in f.filename]
    return f"raised at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else "raised by load"
