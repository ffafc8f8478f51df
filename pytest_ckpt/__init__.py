"""pytest-ckpt: what training saves is provably what inference loads.

>>> import pytest_ckpt as pc
>>> pc.assert_same(model, "checkpoints/last.pt")          # doctest: +SKIP

The package imports torch lazily, on first use of a public name, so that
``pytest_ckpt.plugin`` (loaded by pytest in every project) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "schema": "pytest_ckpt.api",
    "load_state_dict": "pytest_ckpt.api",
    "diff": "pytest_ckpt.api",
    "assert_same": "pytest_ckpt.api",
    "load_into": "pytest_ckpt.api",
    "save": "pytest_ckpt.api",
    "verify": "pytest_ckpt.api",
    "inspect": "pytest_ckpt.api",
    "save_schema": "pytest_ckpt.api",
    "LoadReport": "pytest_ckpt.api",
    "Schema": "pytest_ckpt.checkpoint.schema",
    "TensorSpec": "pytest_ckpt.checkpoint.schema",
    "CheckpointDiff": "pytest_ckpt.report.diff",
    "Note": "pytest_ckpt.checkpoint.notes",
    "CheckpointError": "pytest_ckpt.errors",
    "CheckpointMismatch": "pytest_ckpt.errors",
    "check_resume": "pytest_ckpt.checks.resume",
    "check_roundtrip": "pytest_ckpt.checks.roundtrip",
    "check_interrupted": "pytest_ckpt.checks.interrupted",
    "RoundTripReport": "pytest_ckpt.checks.report",
    "InterruptedReport": "pytest_ckpt.checks.variations.crash_report",
    "VariationUnavailable": "pytest_ckpt.errors",
    "InterruptedMismatch": "pytest_ckpt.errors",
    "check_resume_hf": "pytest_ckpt.checks.trainers.hf",
    "check_resume_lightning": "pytest_ckpt.checks.trainers.lightning",
    "check_interrupted_hf": "pytest_ckpt.checks.trainers.hf_interrupted",
    "run_state": "pytest_ckpt.resume.state",
    "RunState": "pytest_ckpt.resume.state",
    "ResumeReport": "pytest_ckpt.resume.report",
    "ResumeMismatch": "pytest_ckpt.errors",
    "NotReproducible": "pytest_ckpt.errors",
    "ResumeError": "pytest_ckpt.errors",
    "ResumeUnavailable": "pytest_ckpt.errors",
    "latest_complete": "pytest_ckpt.api",
    "LatestComplete": "pytest_ckpt.checkpoint.latest",
}

__all__ = sorted(_EXPORTS) + ["strategies"]


def __getattr__(name: str):
    if name == "strategies":
        return importlib.import_module("pytest_ckpt.strategies")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_ckpt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from .api import (LoadReport, assert_same, diff, load_into, load_state_dict,
                      save, schema, verify)
    from .checkpoint.schema import Schema, TensorSpec
    from .api import latest_complete
    from .checkpoint.latest import LatestComplete
    from .checkpoint.notes import Note
    from .compare.diff import CheckpointDiff
    from .checks.interrupted import check_interrupted
    from .checks.report import RoundTripReport
    from .checks.resume import check_resume
    from .checks.roundtrip import check_roundtrip
    from .checks.variations.crash_report import InterruptedReport
    from .errors import (CheckpointError, CheckpointMismatch, InterruptedMismatch, NotReproducible,
                         ResumeError, ResumeMismatch, ResumeUnavailable, VariationUnavailable)
    from .checks.trainers.hf import check_resume_hf
    from .checks.trainers.lightning import check_resume_lightning
    from .checks.trainers.hf_interrupted import check_interrupted_hf
    from .resume.report import ResumeReport
    from .resume.state import RunState, run_state
