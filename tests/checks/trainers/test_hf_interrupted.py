"""pc.check_interrupted_hf: each kill's verdict, the run without a kill judged first, and bad input said in
one line. (The whole check, both resume modes on a real Trainer, runs in docs/frameworks.md, "Interrupted
Trainer saves", executed by tests/test_docs.py.)"""

from __future__ import annotations

import functools

import pytest

import pytest_ckpt as pc

pytest.importorskip("transformers", reason="the Trainer checks need the transformers extra")

from pytest_ckpt.checks.trainers.hf_crash import LAST, LATEST_COMPLETE, HFCrashJob, Resumed, classify  # noqa: E402
from pytest_ckpt.checks.trainers.hf_interrupted import _report  # noqa: E402

from . import hf_runs  # noqa: E402

torch = pytest.importorskip("torch")
REFERENCE = Resumed(None, 0, [3.0, 2.0, 1.5, 1.2, 1.0, 0.9], {"w": torch.ones(2), "b": torch.zeros(1)})


def resumed(chosen, step, losses=None, **final):
    return Resumed(chosen, step, losses or REFERENCE.losses[step:], {**REFERENCE.final, **final})


@pytest.mark.parametrize("mode, run, verdict, loaded, detail", [
    (LAST, Resumed("checkpoint-4", raised="FileNotFoundError: .../checkpoint-4/trainer_state.json"), "hard fail", "",
     "resume_from_checkpoint=True picks checkpoint-4 and train() raised FileNotFoundError: "
     ".../checkpoint-4/trainer_state.json; checkpoint-2 beside it is whole"),
    (LAST, resumed("checkpoint-4", 4), "pass", "new", "resume_from_checkpoint=True picks checkpoint-4 and trains as "
                                                     "the uninterrupted run"),
    (LATEST_COMPLETE, resumed("checkpoint-2", 2), "pass", "previous", "pc.latest_complete picks checkpoint-2 and "
                                                                    "trains as the uninterrupted run"),
    (LAST, resumed("checkpoint-4", 4, [1.0, 0.8]), "silent divergence", "",
     "resume_from_checkpoint=True picks checkpoint-4, resumes from step 4 and trains on, but its loss at step 6 is "
     "0.8 (uninterrupted: 0.9)"),
    (LAST, resumed("checkpoint-4", 4, w=torch.tensor([1.0, 1.5])), "silent divergence", "",
     "resume_from_checkpoint=True picks checkpoint-4, resumes from step 4 and trains on, but its final weights "
     "differ from the uninterrupted run's in 1 of 2 tensors (w most)"),
    (LATEST_COMPLETE, Resumed(None, 0, REFERENCE.losses, REFERENCE.final), "lost work", "",
     "pc.latest_complete picks no checkpoint: training starts again from step 0"),
])
def test_each_kill_is_judged_by_what_the_resumed_trainer_did(mode, run, verdict, loaded, detail):
    job = HFCrashJob(b"", at=4, earlier=2, resume=mode)
    outcome = classify(job, "torn .../checkpoint-4/optimizer.pt at 50%", True, REFERENCE, run, "checkpoint-2")
    assert (outcome.verdict, outcome.loaded, outcome.detail) == (verdict, loaded, detail)


def test_a_trainer_that_does_not_resume_its_own_complete_checkpoint_is_said_before_any_kill():
    job = HFCrashJob(b"", at=4, earlier=2, resume=LAST)
    control = classify(job, "no kill (checkpoint-4 complete)", False, REFERENCE, resumed("checkpoint-4", 4, [1.0, 0.8]),
                       "checkpoint-4")
    result = {"control": vars(control), "outcomes": [], "not_run": [], "files": ["optimizer.pt"], "resumes": 1}
    with pytest.raises(pc.InterruptedMismatch) as err:
        _report(result, job)
    assert str(err.value) == (
        "ckpt-interrupted Trainer save (saved with transformers.Trainer._save_checkpoint, checkpoint-4 over "
        "checkpoint-2, loaded with Trainer.train(resume_from_checkpoint=True)): with no kill at all, "
        "resume_from_checkpoint=True picks checkpoint-4, resumes from step 4 and trains on, but its loss at step 6 "
        "is 0.8 (uninterrupted: 0.9): the Trainer does not resume exactly from its own complete checkpoint-4; make "
        "pc.check_resume_hf(make_trainer, at=4) pass first")


@pytest.mark.parametrize("kw, error, message", [
    ({"at": 1}, ValueError, "at=1: check_interrupted_hf kills the Trainer's save of checkpoint-<at> over its complete "
                            "checkpoint-<at // 2> and resumes: at from 2 to 5 (the trainer's max_steps is 6)"),
    ({"at": 6}, ValueError, "at=6: check_interrupted_hf kills"),
    ({"at": 3, "resume": "newest"}, ValueError, "resume='newest': check_interrupted_hf resumes as "
                                                "resume_from_checkpoint=True does (resume=True, the default) or from "
                                                "pc.latest_complete(output_dir) (resume='latest_complete')"),
    ({"at": 3, "make_trainer": lambda d: hf_runs.make_trainer(d)}, pc.VariationUnavailable,
     "check_interrupted_hf runs the Trainer in a child process: the make_trainer function cannot be pickled"),
    ({"at": 3, "make_trainer": functools.partial(hf_runs.make_trainer, max_steps=-1, num_train_epochs=1)}, ValueError,
     "make_trainer(output_dir) built a Trainer without max_steps (max_steps=-1)"),
    ({"at": 3, "make_trainer": "not callable"}, TypeError, "make_trainer='not callable' is not callable"),
])
def test_bad_input_is_one_line_naming_the_argument(kw, error, message):
    kw = {"make_trainer": hf_runs.make_trainer, **kw}
    with pytest.raises(error) as err:
        pc.check_interrupted_hf(kw.pop("make_trainer"), **kw)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
