"""Hugging Face checkpoint directories: what ``transformers.Trainer`` writes at every save, and a
``save_pretrained`` directory.

A Trainer checkpoint (``checkpoint-N``) holds the model's ``save_pretrained`` files (``config.json``
and ``generation_config.json`` first, then the weights), ``training_args.bin``, ``optimizer.pt``,
``scheduler.pt``, ``scaler.pt``, ``rng_state.pth``, and ``trainer_state.json``, which the Trainer
writes last. Read: the weights, by their own format, once the files ``from_pretrained`` opens
beside them are whole (``config.json``, and ``generation_config.json`` where it was saved: a torn
or absent ``config.json`` makes ``from_pretrained`` fail; for a torn ``generation_config.json`` it
silently builds generation settings from ``config.json``, and the saved ones are lost). Verified besides: every JSON file
parses; each torch file is intact and asks for nothing that runs code; and a Trainer checkpoint
holds ``trainer_state.json`` (without it the save did not finish). A ``tmp-checkpoint-N`` directory
is the Trainer's staging name, renamed once a save completes: never a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import CheckpointError
from .data_classes import with_data_classes
from .registry import Contents, Format, detect_file, formats, register
from .safe_globals import CODE, classify

__all__ = ["TRAINER_STATE", "is_trainer_checkpoint", "global_step", "claims"]

NAME = "hf-checkpoint-dir"
TRAINER_STATE = "trainer_state.json"
CONFIG = "config.json"
#: what ``save_pretrained`` writes right after ``config.json``, for a model that generates
GENERATION_CONFIG = "generation_config.json"
#: the Trainer's names for a checkpoint directory, and for one it is still writing (older versions)
CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
STAGING_NAME = re.compile(r"tmp-checkpoint-(\d+)")
#: the single-file weights ``save_pretrained`` writes (a model's, a PEFT adapter's)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "adapter_model.safetensors", "adapter_model.bin")
#: the torch files of a training state, beside the weights
STATE_SUFFIXES = (".pt", ".pth", ".bin")
#: packages whose classes a Trainer pickles into ``training_args.bin`` (checked only where imported)
_TRAINER_PACKAGES = frozenset({"transformers", "accelerate", "peft", "trl"})


def is_trainer_checkpoint(directory: Path, names: list[str]) -> bool:
    """A directory the Trainer wrote (or began to write): it holds ``trainer_state.json``, or it is
    named as the Trainer names its checkpoints."""
    return (TRAINER_STATE in names or CHECKPOINT_NAME.fullmatch(directory.name) is not None
            or STAGING_NAME.fullmatch(directory.name) is not None)


def claims(directory: Path, names: list[str]) -> bool:
    """A Trainer checkpoint, or a ``save_pretrained`` directory (weights beside ``config.json``, or
    beside the ``generation_config.json`` written after it)."""
    return is_trainer_checkpoint(directory, names) or (
        (CONFIG in names or GENERATION_CONFIG in names) and _weights(directory, names) is not None)


def global_step(directory: Path) -> int | None:
    """The step ``trainer_state.json`` records (``global_step``), or ``None`` when it says none."""
    try:
        state = json.loads((directory / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    step = state.get("global_step") if isinstance(state, dict) else None
    return step if type(step) is int and step >= 0 else None


def _weights(directory: Path, names: list[str]) -> tuple[Format, Path] | None:
    """The weights' own format and what it reads (an index, the directory, a file), or ``None``."""
    for fmt in formats().values():
        if fmt.name != NAME and fmt.find is not None:
            target = fmt.find(directory, names)
            if target is not None:
                return fmt, target
    for name in WEIGHT_FILES:
        if name in names and (directory / name).is_file():
            return detect_file(directory / name), directory / name
    return None


def _names(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError as e:
        raise CheckpointError(directory, "unreadable", e.strerror or str(e)) from None


def _not_staging(directory: Path) -> None:
    m = STAGING_NAME.fullmatch(directory.name)
    if m:
        raise CheckpointError(
            directory, "incomplete",
            f"a Trainer staging directory: the Trainer writes checkpoint-{m[1]} under this name and "
            "renames it once the save completes, so this save did not finish")


def _weights_or_refuse(directory: Path, names: list[str]) -> tuple[Format, Path]:
    found = _weights(directory, names)
    if found is None:
        raise CheckpointError(
            directory, "incomplete",
            f"no model weights ({', '.join(WEIGHT_FILES[:2])} or a sharded index) in a "
            "checkpoint directory: a save killed before it wrote them")
    return found


def _configs_whole(directory: Path, names: list[str]) -> None:
    """The files ``from_pretrained`` opens beside the weights are whole: ``config.json`` is there
    wherever ``generation_config.json`` (written after it) is, and both parse."""
    if GENERATION_CONFIG in names and CONFIG not in names:
        raise CheckpointError(
            directory / CONFIG, "incomplete",
            f"{CONFIG} is absent beside {GENERATION_CONFIG}, which save_pretrained writes after it: "
            "from_pretrained cannot build the model without it")
    for name in (CONFIG, GENERATION_CONFIG):
        if name in names:
            _json_whole(directory / name)


def read(directory: Path, *, meta: bool, weights_only: bool = True) -> Contents:
    """The weights of the directory, as their own format reads them, once the files
    ``from_pretrained`` opens beside them are whole (what ``verify`` refuses there, a read refuses)."""
    names = _names(directory)
    _not_staging(directory)
    _configs_whole(directory, names)
    fmt, target = _weights_or_refuse(directory, names)
    return fmt.read(target, meta=meta, weights_only=weights_only)


def verify(directory: Path) -> None:
    """Every file a resume or ``from_pretrained`` opens is whole; ``incomplete`` names the first that
    is absent or torn."""
    names = _names(directory)
    _not_staging(directory)
    _configs_whole(directory, names)  # save_pretrained writes them before the weights
    fmt, target = _weights_or_refuse(directory, names)
    fmt.verify(target)
    trainer = is_trainer_checkpoint(directory, names)
    if trainer and TRAINER_STATE not in names:
        raise CheckpointError(
            directory / TRAINER_STATE, "incomplete",
            f"{TRAINER_STATE} is absent: the Trainer writes it last, so this save did not finish "
            f"(the directory holds {', '.join(names[:6]) or 'nothing'}{' ...' if len(names) > 6 else ''})")
    for name in names:
        path = directory / name
        if name.endswith(".json"):
            _json_whole(path)
        elif name.endswith(STATE_SUFFIXES) and not _weights_file(name) and path.is_file():
            _state_whole(path)


def _weights_file(name: str) -> bool:
    # the weights (one file or numbered shards): verified by their own format above
    from .sharded import SHARD_NAME  # not at import: sharded registers after this format

    return name in WEIGHT_FILES or SHARD_NAME.fullmatch(name) is not None


def _json_whole(path: Path) -> None:
    """A JSON file of the checkpoint parses; torn (a save killed while it wrote it) is ``incomplete``."""
    try:
        json.loads(path.read_bytes())
    except OSError as e:
        raise CheckpointError(path, "unreadable", e.strerror or str(e)) from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        why = f" ({e})" if isinstance(e, ValueError) else ""
        raise CheckpointError(
            path, "incomplete",
            f"{path.name} is not valid JSON{why}: torn by a save that did not finish"
            + _CONSEQUENCE.get(path.name, "")) from None


#: what ``from_pretrained`` does with a torn file it opens
_CONSEQUENCE = {
    CONFIG: "; from_pretrained fails on it",
    GENERATION_CONFIG: "; from_pretrained builds generation settings from config.json in its place, "
                       "silently: the saved ones are lost",
}


def _state_whole(path: Path) -> None:
    """A torch file of the training state (optimizer, scheduler, RNG states, training arguments) is
    intact, with the data classes it pickled allowed; the Trainer's own classes in a process that
    has not imported their package are accepted unread (nothing in them is unpickled here)."""
    from . import verify as verify_file

    try:
        with_data_classes(verify_file, path)
    except CheckpointError as e:
        if e.kind in ("unsafe", "needs-safe-globals") and e.globals and all(map(_trainer_class, e.globals)):
            return
        raise


def _trainer_class(name: str) -> bool:
    return name.split(".")[0] in _TRAINER_PACKAGES and classify(name) != CODE


FORMAT = register(Format(NAME, read=read, verify=verify,
                         find=lambda directory, names: directory if claims(directory, names) else None))
