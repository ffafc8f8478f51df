"""pc.check_resume_hf through a real transformers.Trainer: its own checkpoint-N, its own resume."""

from __future__ import annotations

import functools
import os
import shutil
import sys
import threading
from pathlib import Path

import pytest

import pytest_ckpt as pc

pytest.importorskip("transformers", reason="the Trainer checks need the transformers extra")

from . import hf_runs  # noqa: E402


def test_a_trainer_resumes_from_its_own_checkpoint_exactly():
    report = pc.check_resume_hf(hf_runs.make_trainer, at=3)
    assert report.ok and report.steps == 6 and len(report.losses) == 6
    # every piece of the Trainer's state was compared, the dropout's torch stream included
    assert {"run.trainer.model", "run.trainer.optimizer", "run.trainer.lr_scheduler", "torch",
            "run.trainer.state.global_step", "run.trainer.state.epoch"} <= set(report.compared)
    assert str(report).startswith("ok: resume after step 3 matches the uninterrupted run (6 steps")


def test_save_only_model_resumes_with_a_fresh_optimizer():
    with pytest.raises(pc.ResumeMismatch) as err:
        pc.check_resume_hf(functools.partial(hf_runs.make_trainer, save_only_model=True), at=3)
    report = err.value.report
    assert report.first_divergent_step == 4
    assert [n.kind for n in report.notes][:2] == ["resume-optimizer", "resume-scheduler"]
    first = report.notes[0]
    assert "exp_avg" in first.text and "empty after load" in first.text
    assert first.fix.startswith("save_only_model=True leaves optimizer.pt out of checkpoint-3, and the Trainer "
                                "resumes from a fresh optimizer without a warning: train with save_only_model=False")
    assert report.notes[1].fix.startswith("save_only_model=True leaves scheduler.pt out of checkpoint-3")


def test_ignore_data_skip_trains_again_on_the_epochs_first_batches():
    with pytest.raises(pc.ResumeMismatch) as err:
        pc.check_resume_hf(functools.partial(hf_runs.make_trainer, ignore_data_skip=True), at=3)
    report = err.value.report
    first = report.notes[0]
    assert first.kind == "resume-data" and "at step 4 on the batch the uninterrupted run saw at step 1" in first.text
    assert first.fix.startswith("ignore_data_skip=True makes the resumed Trainer start the epoch's data over")
    # the RNG differs because the epoch starts over: said as that consequence, after it
    assert [n.fix.startswith("it follows from ignore_data_skip=True") for n in report.notes[1:]] == [True]


def test_a_callback_with_unsaved_state_is_named_with_the_trainers_fix():
    with pytest.raises(pc.ResumeMismatch) as err:
        pc.check_resume_hf(functools.partial(hf_runs.make_trainer, callbacks=[hf_runs.EMA]), at=3)
    notes = err.value.report.notes
    assert {n.kind for n in notes} == {"resume-weights", "resume-counter"}
    assert all(n.text.startswith("run.trainer.callbacks.EMA.") for n in notes)
    assert all("make EMA one (transformers.trainer_callback.ExportableState" in n.fix for n in notes)


def test_an_error_in_the_training_call_is_named_after_it():
    class Boom(hf_runs.transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise RuntimeError("boom at step 2")

    with pytest.raises(pc.ResumeError, match=r"^transformers\.Trainer\.train raised RuntimeError: boom at step 2 "
                                             r"\(at step 2 of the uninterrupted run\)$"):
        pc.check_resume_hf(functools.partial(hf_runs.make_trainer, callbacks=[Boom]), at=3)


def test_a_check_that_stops_early_leaves_no_training_thread_paused():
    class Uploaded(hf_runs.transformers.TrainerCallback):
        """Moves each checkpoint away once saved, as an upload-and-delete callback does."""

        def on_save(self, args, state, control, **kwargs):
            shutil.rmtree(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    with pytest.raises(pc.ResumeError, match=r"raised FileNotFoundError: the Trainer wrote no checkpoint-3 after "
                                             r"step 3 \(in .*\) \(saving after step 3 to "):
        pc.check_resume_hf(functools.partial(hf_runs.make_trainer, callbacks=[Uploaded]), at=3)
    # the run paused before step 4 was ended, not left waiting
    assert not [t.name for t in threading.enumerate() if t.name.startswith("pytest-ckpt")]


@pytest.mark.parametrize("make, error, message", [
    (lambda d: hf_runs.transformers.LlamaForCausalLM(hf_runs.CONFIG), TypeError,
     "make_trainer(output_dir) returned LlamaForCausalLM, not a transformers.Trainer"),
    (functools.partial(hf_runs.make_trainer, max_steps=-1, num_train_epochs=1), ValueError,
     "make_trainer(output_dir) built a Trainer without max_steps (max_steps=-1)"),
    (lambda d: hf_runs.make_trainer(d + "-elsewhere"), ValueError,
     "make_trainer(output_dir) built a Trainer with output_dir="),
    ("not callable", TypeError, "make_trainer='not callable' is not callable"),
])
def test_bad_make_trainer_is_one_line_naming_it(make, error, message):
    with pytest.raises(error) as err:
        pc.check_resume_hf(make, at=3)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("at", [6, 0, (2, 7), "3"])
def test_at_past_the_end_names_at_and_max_steps(at):
    with pytest.raises(ValueError) as err:
        pc.check_resume_hf(hf_runs.make_trainer, at=at)
    assert str(err.value) == (f"at={at!r}: check_resume_hf resumes after a step from 1 to 5 (the trainer's max_steps "
                              f"is 6: a checkpoint after step 6 has nothing left to resume)")


def test_without_transformers_installed_one_line_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # what an absent package looks like to import
    with pytest.raises(ModuleNotFoundError, match=r"^check_resume_hf needs transformers, which is not installed "
                                                  r"here: pip install pytest-ckpt\[transformers\]$"):
        pc.check_resume_hf(hf_runs.make_trainer, at=3)


def test_fresh_process_resumes_in_another_process_and_names_the_cause_in_the_trainers_words(tmp_path):
    with pytest.raises(pc.ResumeMismatch) as err:
        pc.check_resume_hf(functools.partial(hf_runs.make_trainer, save_only_model=True), at=3,
                           variation="fresh-process", workdir=tmp_path)
    notes = err.value.report.notes
    assert [n.kind for n in notes][:2] == ["resume-optimizer", "resume-scheduler"]
    assert notes[0].fix.startswith("save_only_model=True leaves optimizer.pt out of checkpoint-3")
    # the resumed run trained in a process of its own, which wrote its batches for this one to read
    (child,) = (tmp_path / "runs").glob("fresh-process-*/resumed-batches.json")
    assert int(child.parent.name.rpartition("-")[2]) != os.getpid()


@pytest.mark.parametrize("variation, error, message", [
    ("ddp", pc.ResumeUnavailable, "check_resume_hf runs under plain and fresh-process only: the Trainer wraps the "
                                  "model in DistributedDataParallel itself when launched on several processes"),
    ("fsdp-reshard-1", pc.ResumeUnavailable, "check_resume_hf runs under plain and fresh-process only: the Trainer "
                                             "shards the model itself"),
    ("sideways", ValueError, "check_resume_hf: unknown variation 'sideways'; valid: plain, compile, ddp"),
])
def test_a_variation_the_trainer_runs_itself_says_how(variation, error, message):
    with pytest.raises(error) as err:
        pc.check_resume_hf(hf_runs.make_trainer, at=3, variation=variation)
    assert str(err.value).startswith(message)


def test_fresh_process_needs_a_make_trainer_another_process_can_import():
    with pytest.raises(pc.ResumeUnavailable, match=r"^cannot run in a fresh process: the make_trainer \S*<lambda> is a "
                                                   r"lambda or a closure, which another process cannot import"):
        pc.check_resume_hf(lambda d: hf_runs.make_trainer(d), at=3, variation="fresh-process")
