"""The trainer checks' ``fresh-process`` variation, on the new process's side: the same sessions as the
parent's, around the project's own ``make_trainer`` (and ``make_module``, ``make_data``), unpickled.

:func:`functions` is what :mod:`pytest_ckpt.resume.child` calls (by name) to get ``start``, ``step``,
``save`` and ``load``; the parent made the argument with :func:`.check.fresh_spec`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from . import hf, lightning
from .stepped import Stepper

#: the frameworks, by the name :func:`.check.fresh_spec` was given
FRAMEWORKS = {"hf": hf, "lightning": lightning}


def functions(spec: dict) -> dict[str, Callable]:
    """``start``, ``step``, ``save``, ``load`` of a trainer check, in this (fresh) process; its runs under a
    folder of their own beside the parent's."""
    framework = FRAMEWORKS[spec["framework"]]
    build = framework.sessions(*spec["makers"], points=spec["points"])
    stepper = Stepper(build, Path(spec["roots"]) / f"fresh-process-{os.getpid()}", framework.NAMES, fresh=True)
    return {"start": stepper.start, "step": stepper.step, "save": stepper.save, "load": stepper.load}
