"""The weights_only migration: which refused globals are data classes, and the line that allows them.

torch 2.6 made ``torch.load(weights_only=True)`` the default, and old checkpoints that pickled an
``argparse.Namespace``, a dataclass config or an enum stopped loading; the usual "fix" turns safety
off for the whole file (pytorch#179904, Lightning#20643). A data class runs no code when it is
unpickled, so allowing exactly it (``torch.serialization.add_safe_globals``) is the safe fix. A
global that runs code (``os.system``, ``builtins.eval``) stays refused (kind ``unsafe``).

Nothing is imported here: a global whose module the process has not imported is not looked at
(it is "unknown"), so reading a file never runs a module's code.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
from pathlib import Path
from typing import Iterable

from ..errors import CheckpointError

__all__ = ["DATA", "CODE", "UNKNOWN", "classify", "allow_line", "data_class_refusal", "unknown_hint"]

DATA, CODE, UNKNOWN = "data", "code", "unknown"

#: classes of the standard library (and numpy's reconstructors, as torch's own docs list them)
#: that hold data and run no code when unpickled
KNOWN_DATA = frozenset({
    "argparse.Namespace", "types.SimpleNamespace",
    "collections.deque", "collections.Counter", "collections.defaultdict", "collections.OrderedDict",
    "datetime.datetime", "datetime.date", "datetime.time", "datetime.timedelta", "datetime.timezone",
    "decimal.Decimal", "fractions.Fraction", "uuid.UUID",
    "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePosixPath",
    "pathlib.PureWindowsPath",
    "numpy.dtype", "numpy.ndarray", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
})

#: modules whose every global is code to run, named without importing anything
CODE_MODULES = frozenset({"os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "runpy",
                          "importlib", "pickle", "marshal", "ctypes", "pty", "webbrowser", "code"})


def classify(name: str) -> str:
    """``data`` (a class holding data: safe to allow), ``code`` (runs code when unpickled), or
    ``unknown`` (its module is not imported here, or a class that may run code in ``__setstate__``).

    >>> classify("argparse.Namespace"), classify("builtins.eval"), classify("os.system")
    ('data', 'code', 'code')
    """
    if name in KNOWN_DATA or name.startswith("numpy.dtypes."):
        return DATA
    module, _, qual = name.rpartition(".")
    if name.startswith("<") or module.split(".")[0] in CODE_MODULES:
        return CODE
    obj = _resolve(name)
    if obj is None:
        return UNKNOWN
    if isinstance(obj, type):
        if issubclass(obj, enum.Enum) or dataclasses.is_dataclass(obj):
            return DATA
        if issubclass(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
            return DATA
        return UNKNOWN
    return CODE if callable(obj) else UNKNOWN


def _resolve(name: str):
    """The object ``module.qualname`` names, from modules already imported (never imports)."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        obj = module
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def allow_line(names: Iterable[str]) -> str:
    """The lines that allow ``names``, imports first.

    >>> print(allow_line(["argparse.Namespace", "mypkg.config.TrainConfig"]))
    import argparse, mypkg.config
    torch.serialization.add_safe_globals([argparse.Namespace, mypkg.config.TrainConfig])
    """
    names = list(names)
    modules = list(dict.fromkeys(_module_of(n) for n in names))
    return (f"import {', '.join(modules)}\n"
            f"torch.serialization.add_safe_globals([{', '.join(names)}])")


def _module_of(name: str) -> str:
    # the longest imported module prefix; else everything up to the last component
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:cut]) in sys.modules:
            return ".".join(parts[:cut])
    return name.rpartition(".")[0]


def data_class_refusal(path: str | Path, refused: list[str], what: str) -> CheckpointError | None:
    """The error for a torch file whose refused globals are all data classes (kind
    ``needs-safe-globals``): each named, and the line that allows exactly them. ``None`` when
    one of them runs code or cannot be checked here: that stays ``unsafe``."""
    if not refused or any(classify(n) != DATA for n in refused):
        return None
    shown = ", ".join(refused)
    indented = allow_line(refused).replace("\n", "\n    ")
    return CheckpointError(
        path,
        "needs-safe-globals",
        f"{what} asks for {shown}: {'a data class' if len(refused) == 1 else 'data classes'} "
        "(unpickling runs no code), which weights-only loading refuses until allowed; nothing was "
        f"run. Allow exactly {'it' if len(refused) == 1 else 'them'} before loading (e.g. in "
        f"conftest.py):\n    {indented}\nor for one load only: with "
        f"torch.serialization.safe_globals([{shown}]): ... ; never weights_only=False for this",
        globals=refused,
    )


def unknown_hint(refused: list[str]) -> str:
    """For an ``unsafe`` refusal: what to do about classes this process could not check (their
    module is not imported), when none of the refused globals is known to run code."""
    kinds = {n: classify(n) for n in refused}
    if any(k == CODE for k in kinds.values()):
        code = [n for n, k in kinds.items() if k == CODE]
        return f" ({', '.join(code)} {'runs' if len(code) == 1 else 'run'} code)"
    unknown = [n for n, k in kinds.items() if k == UNKNOWN]
    if not unknown:
        return ""
    return (f". {', '.join(unknown)} could not be checked here (its module is not imported, or a "
            "class that may run code when unpickled); if it only holds data (a dataclass, an "
            f"enum, a namespace), allow it: {allow_line(refused).replace(chr(10), '; ')}")
