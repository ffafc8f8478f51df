"""The child process of the ``interrupted`` variation: the project's save, run into a kill at each
of its file boundaries.

Started by :func:`run_crashes` as :func:`_main` on one fresh rank worker of
:mod:`pytest_ckpt.processes.ranks` (never a reused one: it installs a tracer and forks). In ``WORKDIR``:

- ``a.pt``/``b.pt``: the state dicts of the previous checkpoint's model (A) and the new one's (B);
- ``base/``: ``save(A, base/NAME)`` run to completion;
- ``complete/``: a copy of ``base/``, then ``save(B, complete/NAME)`` traced to completion: its
  boundaries are ``boundaries.json``;
- ``kill-K/``: a copy of ``base/``, then ``save(B, kill-K/NAME)`` killed at boundary ``K``; the
  kills run in forked children, ``jobs`` at a time (:func:`pytest_ckpt.processes.crash.kill_each`);
  ``status.json`` holds how each ended.

A save that raises, writes nothing, or writes outside the directory it was given is written to
``error.txt`` (exit :data:`EXIT_BAD_SAVE`): the parent reports it naming the function.
"""

from __future__ import annotations

import json
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path

from ...processes import ranks
from ...processes.boundaries import Tracer
from ...processes.children import import_object, unpickled
from ...processes.crash import kill_each

#: the save itself is at fault (raised, wrote nothing, wrote outside its path): see ``error.txt``
EXIT_BAD_SAVE = 4


@dataclass
class CrashJob:
    """What the child needs; pickled to ``job.pkl`` after ``sys.path``."""

    factory: tuple[str, str]
    config_blob: bytes | None
    save: tuple[str, str]
    save_name: str
    seeds: tuple[int, int]
    save_takes: tuple[str, ...] = ()
    jobs: int = 2
    #: seconds one kill child may take
    kill_timeout: float = 60.0


def run_crashes(job: CrashJob, workdir: Path, *, timeout: float) -> None:
    """Run the child and wait; raises ``VariationUnavailable`` (cannot run here) or ``RuntimeError``."""
    ranks.run_ranks(__name__, job, workdir, timeout=timeout, world_size=1,
                         function="_main", label="interrupted", fresh=True)


def _main(job_path: str, rank: int) -> int:
    workdir = Path(job_path).parent

    def rebuild(job: CrashJob):
        return (job, import_object(*job.factory),
                unpickled(job.config_blob),
                import_object(*job.save))

    rebuilt = ranks.read_rank_job(job_path, rebuild, "the factory, config or save function")
    if rebuilt is None:
        return ranks.EXIT_UNAVAILABLE
    job, factory, config, save = rebuilt
    import torch

    torch.set_num_threads(1)  # the kills are forked: no thread pool may be running at a fork
    from ... import api
    from .base import describe, misused, perturb, train_one_step

    what = describe(save)

    def build(seed: int):
        torch.manual_seed(seed)
        model = factory(config) if job.config_blob is not None else factory()
        perturb(model, seed)
        kw = {}
        if "optimizer" in job.save_takes:
            kw["optimizer"] = train_one_step(model)[0]
        if "config" in job.save_takes:
            kw["config"] = config
        return model, kw

    def bad(message: str) -> int:
        (workdir / "error.txt").write_text(message)
        return EXIT_BAD_SAVE

    (model_a, kw_a), (model_b, kw_b) = build(job.seeds[0]), build(job.seeds[1])
    torch.save(api.load_state_dict(model_a), workdir / "a.pt")
    torch.save(api.load_state_dict(model_b), workdir / "b.pt")

    base = workdir / "base"
    base.mkdir()
    tracer = Tracer(base).install()
    path_a = base / job.save_name
    try:
        save(model_a, path_a, **kw_a)
    except Exception as exc:  # noqa: BLE001 - the project's error, reported as its own
        tracer.uninstall()
        said = misused(exc, model_a, path_a, save, "interrupted") if isinstance(exc, AttributeError) else None
        return bad(said or f"your save {what}(model, path) raised {type(exc).__name__}: {exc}\n"
                   + traceback.format_exc(limit=-3))
    tracer.uninstall()
    if tracer.outside:
        return bad(_outside(what, base, tracer.outside))
    if not any(base.iterdir()):
        return bad(f"your save {what}(model, path) wrote nothing at {base / job.save_name}")

    # the boundaries: save(B) over a copy of A's directory, traced to the end
    complete = workdir / "complete"
    shutil.copytree(base, complete, symlinks=True)
    tracer = Tracer(complete).install()
    try:
        save(model_b, complete / job.save_name, **kw_b)
    except Exception as exc:  # noqa: BLE001
        tracer.uninstall()
        return bad(f"your save {what}(model, path) raised {type(exc).__name__} when it saved over "
                   f"its previous checkpoint: {exc}\n" + traceback.format_exc(limit=-3))
    tracer.uninstall()
    if tracer.outside:
        return bad(_outside(what, complete, tracer.outside))
    if not tracer.events:
        return bad(f"your save {what}(model, path) created, renamed or removed no file when it saved "
                   f"over its previous checkpoint at {complete / job.save_name}")
    (workdir / "boundaries.json").write_text(json.dumps([e.to_dict() for e in tracer.events]))

    status = kill_each(len(tracer.events), workdir, base, job.save_name, save, model_b, kw_b, jobs=job.jobs,
                       timeout=job.kill_timeout)
    (workdir / "status.json").write_text(json.dumps(status))
    (workdir / "done-0").touch()
    return 0


def _outside(what: str, root: Path, calls: list[str]) -> str:
    return (f"your save {what}(model, path) wrote outside the directory of the path it was given "
            f"({root}): {'; '.join(calls[:3])}; a kill there is out of reach of this check, and "
            "of your load")


if __name__ == "__main__":
    ranks.rank_entry(_main)
