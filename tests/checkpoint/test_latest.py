"""pc.latest_complete on the directories real training leaves behind: Hugging Face Trainer checkpoints
(copies of one a real Trainer wrote: fixtures/trainer), killed and torn saves, names that do not
order by their last number, symlinks and empty saves. Each decoy is a directory whose newest
complete checkpoint is known; pc.verify says the same about a Trainer checkpoint directory."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import pytest_ckpt as pc

TRAINER = Path(__file__).resolve().parent.parent.parent / "fixtures" / "trainer" / "checkpoint-2"


def trainer(root: Path, step: int, *, name: str | None = None, drop=(), torn=(), mtime: float | None = None) -> Path:
    """A copy of the real Trainer checkpoint as ``checkpoint-<step>`` (its trainer_state.json saying
    ``step``), files dropped (a kill before them) or cut in half (a kill while writing them)."""
    path = root / (name or f"checkpoint-{step}")
    shutil.copytree(TRAINER, path)
    state = json.loads((path / "trainer_state.json").read_text())
    (path / "trainer_state.json").write_text(json.dumps({**state, "global_step": step}, indent=2))
    for f in drop:
        (path / f).unlink()
    for f in torn:
        data = (path / f).read_bytes()
        (path / f).write_bytes(data[: len(data) // 2])
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def weights(path: Path, *, step: int | None = None, mtime: float | None = None, **extra) -> Path:
    """A training checkpoint file (weights and, when given, the step it stores)."""
    state = {"model": nn.Linear(2, 2).state_dict(), **extra}
    if step is not None:
        state["global_step"] = step
    torch.save(state, path)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def torn(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


T0 = 1_700_000_000  # mtimes: T0 + n, to make modification time say the opposite of the step


def two_complete(d):
    trainer(d, 2)
    trainer(d, 4)


def killed_after_weights(d):
    trainer(d, 2)
    trainer(d, 4)
    trainer(d, 6, drop=["training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"])


def killed_after_optimizer(d):
    trainer(d, 2)
    trainer(d, 4, drop=["scheduler.pt", "rng_state.pth", "trainer_state.json"])


def staging(d):
    trainer(d, 2)
    trainer(d, 4, name="tmp-checkpoint-4")


def staging_past_step_9(d):  # killed after trainer_state.json, before the rename: whole, yet unfinished
    trainer(d, 10)
    trainer(d, 20)
    trainer(d, 30, name="tmp-checkpoint-30")


def torn_config(d):
    trainer(d, 2)
    trainer(d, 4, torn=["config.json"])


def torn_generation_config(d):
    trainer(d, 2)
    trainer(d, 4, torn=["generation_config.json"])


def torn_trainer_state(d):
    trainer(d, 2)
    trainer(d, 4, torn=["trainer_state.json"])


def torn_optimizer(d):
    trainer(d, 2)
    trainer(d, 4, torn=["optimizer.pt"])


def torn_rng_state(d):
    trainer(d, 2)
    trainer(d, 4, torn=["rng_state.pth"])


def config_absent_its_siblings_hold(d):
    trainer(d, 2)
    trainer(d, 4, drop=["config.json"])


def optimizer_absent_its_siblings_hold(d):
    trainer(d, 2)
    trainer(d, 4, drop=["optimizer.pt"])


def unequal_widths(d):  # issue 27: compared as text, step-9 would win
    for n in (8, 9, 10):
        weights(d / f"step-{n}.pt", mtime=T0 + 10 - n)


def unequal_widths_trainer(d):
    for n in (8, 9, 10):
        trainer(d, n)


def beside_logs_and_a_final_model(d):
    trainer(d, 2)
    trainer(d, 4)
    (d / "runs").mkdir()
    torch.save(nn.Linear(2, 2).state_dict(), d / "model.pt")  # newest by mtime, not a checkpoint-N


def names_hold_several_numbers(d):  # the step stored in trainer_state.json decides
    trainer(d, 300, name="run-1-checkpoint-300")
    trainer(d, 100, name="run-2-checkpoint-100")


def dates(d):
    weights(d / "ckpt-2024-12-31.pt", mtime=T0 + 2)
    weights(d / "ckpt-2025-01-05.pt", mtime=T0 + 1)


def version_suffix(d):
    weights(d / "step-100-v2.pt", mtime=T0 + 2)
    weights(d / "step-300-v1.pt", mtime=T0 + 1)


def a_torn_unnumbered_name(d):
    weights(d / "step-100.pt", mtime=T0 + 3)
    weights(d / "step-200.pt", mtime=T0 + 2)
    torn(weights(d / "last.pt", mtime=T0 + 1))


def an_unnumbered_name_placed_by_its_step(d):
    weights(d / "step-100.pt", step=100, mtime=T0 + 3)
    weights(d / "step-200.pt", step=200, mtime=T0 + 2)
    weights(d / "last.pt", step=300, mtime=T0 + 1)


def a_symlink_to_the_directory(d):
    weights(d / "step-100.pt")
    (d / "step-999").symlink_to(".")


def a_symlink_out_of_the_directory(d):
    weights(d / "step-100.pt")
    outside = d.parent / f"{d.name}-elsewhere"
    outside.mkdir()
    (d / "step-999.pt").symlink_to(weights(outside / "other.pt"))


def a_symlink_loop(d):
    weights(d / "step-100.pt")
    (d / "step-999.pt").symlink_to("step-999.pt")


def an_empty_save(d):
    weights(d / "step-100.pt")
    torch.save({}, d / "step-200.pt")


def rng_states_beside_the_weights(d):  # numpy arrays in a training state: data, not code
    weights(d / "step-100.pt")
    weights(d / "step-200.pt", rng={"numpy": np.random.get_state(), "python": random.getstate()})


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def a_file_that_asks_for_code(d):
    weights(d / "step-100.pt")
    weights(d / "step-200.pt", extra=_Payload(d.parent / "payload-ran"))


# name -> (build, the expected newest complete entry or None, a phrase of the first skip's reason)
DECOYS = {
    "two-complete-trainer-checkpoints": (two_complete, "checkpoint-4", None),
    "trainer-killed-after-its-weights": (killed_after_weights, "checkpoint-4",
                                         "incomplete: trainer_state.json is absent: the Trainer writes it last"),
    "trainer-killed-after-its-optimizer": (killed_after_optimizer, "checkpoint-2", "trainer_state.json is absent"),
    "trainer-staging-directory": (staging, "checkpoint-2", "a Trainer staging directory"),
    "trainer-staging-directory-past-step-9": (staging_past_step_9, "checkpoint-20", "a Trainer staging directory"),
    "torn-config-json": (torn_config, "checkpoint-2", "config.json is not valid JSON"),
    "torn-generation-config-json": (torn_generation_config, "checkpoint-2",
                                    "generation_config.json is not valid JSON"),
    "torn-trainer-state-json": (torn_trainer_state, "checkpoint-2", "trainer_state.json is not valid JSON"),
    "torn-optimizer": (torn_optimizer, "checkpoint-2", "(optimizer.pt)"),
    "torn-rng-state-pth": (torn_rng_state, "checkpoint-2", "(rng_state.pth)"),
    "config-absent-its-sibling-holds": (config_absent_its_siblings_hold, "checkpoint-2",
                                        "config.json is absent beside generation_config.json"),
    "optimizer-absent-its-sibling-holds": (optimizer_absent_its_siblings_hold, "checkpoint-2",
                                           "optimizer.pt is absent, which checkpoint-2 holds"),
    "unequal-widths-8-9-10": (unequal_widths, "step-10.pt", None),
    "unequal-widths-trainer-8-9-10": (unequal_widths_trainer, "checkpoint-10", None),
    "trainer-output-with-logs-and-a-final-model": (beside_logs_and_a_final_model, "checkpoint-4", None),
    "names-with-several-numbers-by-stored-step": (names_hold_several_numbers, "run-1-checkpoint-300", None),
    "dates-in-the-name": (dates, "ckpt-2025-01-05.pt", None),
    "step-100-v2-before-step-300-v1": (version_suffix, "step-300-v1.pt", None),
    "a-torn-last-pt-keeps-the-numbered-order": (a_torn_unnumbered_name, "step-200.pt", "truncated"),
    "last-pt-placed-by-its-stored-step": (an_unnumbered_name_placed_by_its_step, "last.pt", None),
    "symlink-to-the-directory": (a_symlink_to_the_directory, "step-100.pt", "the directory itself"),
    "symlink-out-of-the-directory": (a_symlink_out_of_the_directory, "step-100.pt", "outside"),
    "symlink-loop": (a_symlink_loop, "step-100.pt", "unreadable: a symlink loop"),
    "torch-save-of-an-empty-dict": (an_empty_save, "step-100.pt", "holds no tensor"),
    "numpy-rng-states-are-data": (rng_states_beside_the_weights, "step-200.pt", None),
    "a-file-asking-for-code": (a_file_that_asks_for_code, "step-100.pt", "unsafe: data.pkl asks for os.system"),
}


@pytest.mark.parametrize("decoy", sorted(DECOYS))
def test_latest_complete_returns_the_newest_complete_checkpoint(tmp_path, decoy):
    build, expected, why = DECOYS[decoy]
    directory = tmp_path / "run"
    directory.mkdir()
    build(directory)
    found = pc.latest_complete(directory)
    assert (found.path.name if found.path else None) == expected, str(found)
    if why is not None:
        assert found.skipped and why in found.skipped[0][1], str(found)
    assert not (tmp_path / "payload-ran").exists(), "a candidate was unpickled freely: the payload ran"


def test_a_trainer_checkpoint_directory_is_verified_file_by_file(tmp_path):
    pc.verify(trainer(tmp_path, 2))  # a real one is whole
    with pytest.raises(pc.CheckpointError) as info:
        pc.verify(trainer(tmp_path, 4, torn=["config.json"]))
    assert info.value.kind == "incomplete" and info.value.path.endswith("checkpoint-4/config.json")
    assert "config.json is not valid JSON" in info.value.cause and "from_pretrained fails on it" in info.value.cause
    with pytest.raises(pc.CheckpointError) as info:
        pc.verify(trainer(tmp_path, 6, drop=["scheduler.pt", "rng_state.pth", "trainer_state.json"]))
    assert info.value.kind == "incomplete" and info.value.path.endswith("checkpoint-6/trainer_state.json")
    with pytest.raises(pc.CheckpointError) as info:
        pc.verify(trainer(tmp_path, 8, torn=["model.safetensors"]))
    assert info.value.path.endswith("checkpoint-8/model.safetensors")


def test_a_trainer_checkpoint_reads_as_its_weights(tmp_path):
    path = trainer(tmp_path, 2)
    assert set(pc.load_state_dict(path)) == set(pc.load_state_dict(path / "model.safetensors"))


def test_the_order_says_when_the_names_do_not_decide_it(tmp_path):
    an_unnumbered_name_placed_by_its_step(tmp_path)
    found = pc.latest_complete(tmp_path)
    assert found.order == ("last.pt placed by the step it stores, else by modification time: outside the "
                           "pattern step-#")
    assert str(found).splitlines()[-1] == f"  order: {found.order}"
    assert found.to_dict()["order"] == found.order


def test_a_trainer_checkpoint_whose_optimizer_file_asks_for_code_is_refused(tmp_path):
    path = trainer(tmp_path, 2)
    torch.save({"state": {}, "param_groups": [], "extra": _Payload(tmp_path / "payload-ran")}, path / "optimizer.pt")
    with pytest.raises(pc.CheckpointError) as info:
        pc.verify(path)
    assert not (tmp_path / "payload-ran").exists()
    assert info.value.kind == "unsafe" and info.value.path.endswith("checkpoint-2/optimizer.pt")
    assert info.value.globals == ("os.system",)


class _TransformersCall:
    """Pickles as a call of a transformers function (not one of its classes): a forged training_args.bin."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        from transformers.utils.import_utils import direct_transformers_import

        return (direct_transformers_import, (str(self.path),))  # imports, so runs, the file it is given


def test_a_trainer_checkpoint_whose_training_args_call_a_transformers_function_is_refused(tmp_path):
    import transformers.utils.import_utils  # noqa: F401  (imported: its functions are known to be code)

    code = tmp_path / "code"
    code.mkdir()
    (code / "__init__.py").write_text(f"open({str(tmp_path / 'payload-ran')!r}, 'w').close()\n")
    path = trainer(tmp_path, 2)
    torch.save(_TransformersCall(code), path / "training_args.bin")
    with pytest.raises(pc.CheckpointError) as info:
        pc.verify(path)
    assert not (tmp_path / "payload-ran").exists()
    assert info.value.kind == "unsafe" and info.value.path.endswith("checkpoint-2/training_args.bin")
    assert info.value.globals == ("transformers.utils.import_utils.direct_transformers_import",)
