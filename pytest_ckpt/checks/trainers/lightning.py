"""``pc.check_resume_lightning``: a ``lightning.Trainer`` that stops after step ``at`` and resumes from
its own ``ModelCheckpoint`` file trains as the Trainer that never stopped.

lightning is imported when the check runs, never when pytest_ckpt is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ...resume.check import FRESH_PROCESS_TIMEOUT
from ...resume.report import ResumeReport
from ..scope import check_scope
from .check import fresh_spec, frozen_heap, kept_streams, require, run_check, validate_at, variation_runs
from .stepped import Session

#: how the check's messages name the calls it makes
NAMES = {"start": "make_module, make_trainer, make_data", "step": "lightning:Trainer.fit",
         "save": "lightning:ModelCheckpoint.on_train_batch_end", "load": "lightning:Trainer.fit(ckpt_path)"}
#: the resume variations Lightning runs itself, and how
ELSEWHERE = {
    "compile": "Lightning trains the module it is given: compile inside make_module (torch.compile of the "
               "module's network, or in configure_model), and plain checks the compiled run",
    "ddp": "Lightning wraps the module in DistributedDataParallel itself and launches its own processes "
           "(Trainer(strategy='ddp', devices=N)); this check runs one Trainer in this process",
    "fsdp": "Lightning shards the module itself and launches its own processes (Trainer(strategy='fsdp', "
            "devices=N)); this check runs one Trainer in this process",
}


def check_resume_lightning(make_module: Callable[[], Any], make_trainer: Callable[[str], Any],
                           make_data: Callable[[], Any], *, at: int | tuple[int, ...], atol: float = 0.0,
                           rtol: float = 0.0, variation: str = "plain", workdir: str | Path | None = None,
                           timeout: float = FRESH_PROCESS_TIMEOUT) -> ResumeReport:
    """Check that a ``lightning.Trainer`` resumed with ``fit(..., ckpt_path=...)`` from the checkpoint its own
    ``ModelCheckpoint`` wrote after step ``at`` trains as the Trainer that never stopped.

    ``make_module()`` returns a fresh ``LightningModule``, ``make_trainer(root)`` a ``lightning.Trainer``
    with ``default_root_dir=root`` and ``max_steps`` set, ``make_data()`` a ``DataLoader`` or a
    ``LightningDataModule`` (the same each call). The check adds a ``ModelCheckpoint(every_n_train_steps=at)``
    to each trainer; the uninterrupted ``fit`` runs twice (:class:`~pytest_ckpt.errors.NotReproducible`
    when they disagree), the first also writing the checkpoint, then the resumed ``fit`` runs under another
    global seed. Right before the first resumed step the module, optimizers, LR schedulers, scaler, every
    RNG stream, the loops' progress and the callbacks' state are compared with the uninterrupted run's;
    then every later batch and loss, and the final state, bitwise (``atol``/``rtol`` when asked).
    Raises :class:`~pytest_ckpt.errors.ResumeMismatch` with the report, each cause with its fix in
    Lightning's words. ``variation``, ``workdir`` and ``timeout`` as in
    :func:`~pytest_ckpt.checks.trainers.hf.check_resume_hf` (``fresh-process``: the three functions
    importable by a new process).

    >>> report = pc.check_resume_lightning(LitNet, make_trainer, make_loader, at=4)   # doctest: +SKIP
    """
    __tracebackhide__ = True
    lightning = require("lightning", "check_resume_lightning")
    for name, fn in (("make_module", make_module), ("make_trainer", make_trainer), ("make_data", make_data)):
        if not callable(fn):
            raise TypeError(f"{name}={fn!r} is not callable: check_resume_lightning needs make_module(), "
                            f"make_trainer(root) and make_data()")
    fresh = variation_runs(variation, "check_resume_lightning", ELSEWHERE)
    from . import lightning_fixes

    with kept_streams(), frozen_heap(), check_scope(workdir, "resume-lightning") as (tmp, _):
        module, trainer, data = _parts(make_module, make_trainer, make_data, tmp / "probe", lightning)
        steps = trainer.max_steps
        if not isinstance(steps, int) or steps <= 0:
            raise ValueError(f"make_trainer(root) built a Trainer without max_steps (max_steps={steps!r}): set "
                             f"lightning.Trainer(max_steps=N), the number of steps the check trains")
        points = validate_at(at, steps, "max_steps", "check_resume_lightning")
        facts = lightning_fixes.facts(trainer, data)
        del module, trainer, data
        makers = {"make_module": make_module, "make_trainer": make_trainer, "make_data": make_data}
        spec = fresh_spec("lightning", makers, points, tmp / "runs") if fresh else None
        return run_check(sessions(make_module, make_trainer, make_data, points=points), tmp, steps=steps, at=at,
                         atol=atol, rtol=rtol, names=NAMES,
                         explain=lambda report, saved: lightning_fixes.explain(report, saved, facts),
                         fresh=spec, timeout=timeout)


def sessions(make_module: Callable, make_trainer: Callable, make_data: Callable, *,
             points: tuple[int, ...]) -> Callable[[Path], Session]:
    """``build(root)``: a session of a fresh module, Trainer (its root ``root``) and data, saving after ``points``."""
    lightning = require("lightning", "check_resume_lightning")
    from .lightning_session import LightningSession

    def build(root: Path) -> Session:
        return LightningSession(*_parts(make_module, make_trainer, make_data, root, lightning), points)

    return build


def _parts(make_module: Callable, make_trainer: Callable, make_data: Callable, root: Path,
           lightning: Any) -> tuple[Any, Any, Any]:
    """The module, the trainer and the data of one run, checked."""
    module = make_module()
    if not isinstance(module, lightning.LightningModule):
        raise TypeError(f"make_module() returned {type(module).__name__}, not a lightning.LightningModule")
    trainer = make_trainer(str(root))
    if not isinstance(trainer, lightning.Trainer):
        raise TypeError(f"make_trainer(root) returned {type(trainer).__name__}, not a lightning.Trainer: "
                        f"check_resume_lightning needs make_trainer to build and return the Trainer")
    if Path(trainer.default_root_dir).resolve() != root.resolve():
        raise ValueError(f"make_trainer(root) built a Trainer with default_root_dir={trainer.default_root_dir!r}, "
                         f"not the root it was given ({root}): pass it on, lightning.Trainer(default_root_dir=root, "
                         f"...), so each run writes its own checkpoints")
    data = make_data()
    import torch

    if not isinstance(data, (torch.utils.data.DataLoader, lightning.LightningDataModule)):
        raise TypeError(f"make_data() returned {type(data).__name__}, not a torch DataLoader or a "
                        f"lightning.LightningDataModule")
    return module, trainer, data
