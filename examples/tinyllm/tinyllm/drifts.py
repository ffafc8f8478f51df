"""The five classic save/load drifts, a resume drift and an interrupted save, each a patch of one function.

Every real project has met these; each drift below is what the bug looks like
in this project's code. The test suite's ``conftest.py`` applies the one named
by ``TINYLLM_DRIFT`` (the demo runs the same suite once per drift):

    TINYLLM_DRIFT=layers pytest examples/tinyllm
"""

from __future__ import annotations

import dataclasses
import os

import torch

from . import config, infer, train


def layers() -> None:
    """The serving config lost a block (``n_layer`` 4 -> 3) while training kept 4."""
    config.serving_config = lambda: dataclasses.replace(config.LMConfig(), n_layer=3)


def flat() -> None:
    """The loader expects a flat state dict; training saves a nested training state."""
    infer.extract_weights = lambda checkpoint: checkpoint  # the old torch.save(model.state_dict()) format


def prefix() -> None:
    """The loader never strips DDP's ``module.`` / torch.compile's ``_orig_mod.`` prefixes."""
    infer.strip_wrappers = lambda state: state


def lenient() -> None:
    """The loader was made lenient so "checkpoints of any size load": ``strict=False`` drops what differs."""

    def load_weights(model, state):
        model.load_state_dict(state, strict=False)

    infer.load_weights = load_weights


def interrupted() -> None:
    """The serving export was preempted: the index is written, the last shard never lands."""
    write_shard = train.write_shard

    def write_all_but_last(tensors: dict[str, torch.Tensor], path) -> None:
        if "-of-" in path.name and path.name.split("-")[1] == path.name.split("-of-")[1].split(".")[0]:
            return  # the job was killed here
        write_shard(tensors, path)

    train.write_shard = write_all_but_last


def scheduler() -> None:
    """The training state leaves the LR scheduler out (it predates the warm-up): a resumed run restarts
    the warm-up. The patch is on the save side, which runs in the test's own process under every
    resume variation (``fresh-process`` resumes in a new process, which this patch would not reach)."""
    training_state = train.training_state

    def without_scheduler(*args, **kwargs) -> dict:
        state = training_state(*args, **kwargs)
        state["trainer"].pop("var_sched", None)
        return state

    train.training_state = without_scheduler


def save_in_place(model, path, *, optimizer=None, scheduler=None, data=None, epoch: int = 0, step: int = 0):
    """The training save, "simplified" to write straight onto its path: a job killed while it saves
    leaves the previous checkpoint torn. Module-level, so the ``interrupted`` variation's child process
    imports it by name."""
    state = train.training_state(model, optimizer=optimizer, scheduler=scheduler, data=data, epoch=epoch,
                                 step=step)
    torch.save(state, path)
    return path


def inplace() -> None:
    """The training save lost its temporary file and rename."""
    train.save_checkpoint = save_in_place


DRIFTS = {f.__name__: f for f in (layers, flat, prefix, lenient, interrupted, scheduler, inplace)}


def apply_from_environment() -> str | None:
    """Apply the drift named by ``TINYLLM_DRIFT`` (if any); returns its name."""
    name = os.environ.get("TINYLLM_DRIFT") or None
    if name is not None:
        if name not in DRIFTS:
            raise SystemExit(f"TINYLLM_DRIFT={name}: not one of {', '.join(DRIFTS)}")
        DRIFTS[name]()
    return name
