"""``pc.check_interrupted``: the project's save killed at every file boundary; its load must still
return a whole checkpoint, the previous one or the new one.

>>> report = pc.check_interrupted(build_model, save=save_checkpoint, load=load_checkpoint)  # doctest: +SKIP
>>> print(report)                                                                        # doctest: +SKIP
ckpt-interrupted round trip (saved with train.save_checkpoint, loaded with infer.load_checkpoint): every kill passes: ...

The check itself is the ``interrupted`` variation of the round trip (:mod:`.variations.interrupted`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..processes.timeouts import DEFAULT_FSDP_TIMEOUT
from .roundtrip import check_roundtrip
from .variations.crash_report import InterruptedReport


def check_interrupted(
    factory: Callable[..., nn.Module],
    *,
    save: Callable[..., Any],
    load: Callable[[Path], nn.Module] | None = None,
    config: Any = None,
    dtype: torch.dtype | None = None,
    workdir: str | Path | None = None,
    timeout: float = DEFAULT_FSDP_TIMEOUT,
) -> InterruptedReport:
    """Run ``save`` (the project's training-side save, ``save(model, path)``) in a child process,
    twice to the same path: to completion for one model, then for another, killed for real at each of
    its file boundaries (before each file it creates, renames or removes, and with each written file
    torn); ``load(path)`` (default: ``pc.load_into`` of ``factory(config)``) runs on what each kill
    left, and must return the previous checkpoint or the new one, exactly.

    ``factory`` and ``save`` must be importable module-level functions and ``config`` picklable (the save
    runs in another process), else :class:`~pytest_ckpt.errors.VariationUnavailable` says why.
    Returns the :class:`InterruptedReport` (``.outcomes``: each kill's boundary and class); raises
    :class:`~pytest_ckpt.errors.InterruptedMismatch` (``.report``) when any kill breaks the checkpoint.
    ``dtype``: a cast the load makes on purpose, as in :func:`~pytest_ckpt.check_roundtrip`;
    ``timeout``: seconds the child may take.
    """
    __tracebackhide__ = True
    report = check_roundtrip(factory, variation="interrupted", config=config, save=save, load=load,
                             dtype=dtype, workdir=workdir, fsdp_timeout=timeout)
    return report.interrupted
