"""pc.check_resume_lightning through a real lightning.Trainer: its own ModelCheckpoint, its own fit(ckpt_path=)."""

from __future__ import annotations

import functools

import pytest

import pytest_ckpt as pc

pytest.importorskip("lightning", reason="the Lightning checks need the lightning extra")

from . import lightning_runs as runs  # noqa: E402


def check(at, *, dropout=0.0, shuffle=False, callbacks=()):
    return pc.check_resume_lightning(lambda: runs.Net(dropout), functools.partial(runs.make_trainer, callbacks=callbacks),
                                     lambda: runs.loader(shuffle), at=at)


def test_an_epoch_end_checkpoint_resumes_exactly_without_randomness():
    report = check(4)
    assert report.ok and report.steps == 8
    assert {"run.module", "run.trainer.optimizers[0]", "run.trainer.lr_schedulers[0]", "run.trainer.fit_loop",
            "run.trainer.global_step"} <= set(report.compared)
    # Lightning does not restore torch's RNG; only the loader's iterator drew from it, and no batch shows it
    assert report.not_compared["torch"].startswith("it differs after the resume from step 4, but no step's "
                                                   "computation draws from it")


def test_a_mid_epoch_checkpoint_restarts_a_plain_loaders_epoch():
    with pytest.raises(pc.ResumeMismatch) as err:
        check(2)
    report = err.value.report
    assert report.first_divergent_step == 3
    first = report.notes[0]
    assert first.kind == "resume-data" and "at step 3 on the batch the uninterrupted run saw at step 1" in first.text
    assert first.fix.startswith("the checkpoint after step 2 is mid-epoch (step 2 of 4 in its epoch) and a plain "
                                "DataLoader starts the epoch over on resume: use a stateful loader")


def test_mid_epoch_with_dropout_names_the_data_first_and_the_rng_the_steps_draw_from():
    with pytest.raises(pc.ResumeMismatch) as err:
        check(2, dropout=0.2)
    notes = err.value.report.notes
    assert [n.kind for n in notes] == ["resume-data", "resume-rng"]
    assert notes[1].fix.endswith("(at an epoch end: mid-epoch, the data needs a stateful loader too)")


def test_dropout_and_shuffle_need_the_global_rng_lightning_does_not_save():
    with pytest.raises(pc.ResumeMismatch) as err:
        check(4, dropout=0.2, shuffle=True)
    first = err.value.report.notes[0]
    assert first.kind == "resume-rng" and first.names == ("torch",)
    assert "consequence: from step 5 the resumed run trains on batches the uninterrupted run never saw" in first.text
    assert first.fix.startswith("Lightning's checkpoint holds no global RNG: add a Callback whose state_dict() "
                                "returns {'torch': torch.get_rng_state()}")


def test_the_rng_callback_fix_makes_the_same_run_resume_exactly():
    assert check(4, dropout=0.2, shuffle=True, callbacks=[runs.RNGState]).ok


def test_a_callback_without_state_dict_loses_its_ema():
    with pytest.raises(pc.ResumeMismatch) as err:
        check(4, callbacks=[runs.EMA])
    (note,) = err.value.report.notes
    assert note.text.startswith("run.trainer.callbacks.EMA.shadow is not in the run after load")
    assert note.fix.startswith("Lightning saves a callback's state_dict() (Callback's own is empty): give EMA a "
                               "state_dict()")


@pytest.mark.parametrize("kw, error, message", [
    ({"make_module": lambda: runs.Net().net}, TypeError, "make_module() returned Sequential, not a "
                                                          "lightning.LightningModule"),
    ({"make_trainer": lambda root: runs.make_trainer(root, max_steps=-1, max_epochs=1)}, ValueError,
     "make_trainer(root) built a Trainer without max_steps (max_steps=-1)"),
    ({"make_trainer": lambda root: runs.make_trainer(root + "-elsewhere")}, ValueError,
     "make_trainer(root) built a Trainer with default_root_dir="),
    ({"make_data": lambda: runs.DATA}, TypeError, "make_data() returned TensorDataset, not a torch DataLoader"),
    ({"at": 8}, ValueError, "at=8: check_resume_lightning resumes after a step from 1 to 7 (the trainer's "
                            "max_steps is 8"),
])
def test_bad_input_is_one_line_naming_the_argument(kw, error, message):
    args = {"make_module": runs.Net, "make_trainer": runs.make_trainer, "make_data": runs.loader, "at": 4, **kw}
    at = args.pop("at")
    with pytest.raises(error) as err:
        pc.check_resume_lightning(*args.values(), at=at)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
