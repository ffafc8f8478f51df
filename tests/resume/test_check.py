"""pc.check_resume on real training loops: a correct resume passes, each bug is named by its cause."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import pytest_ckpt as pc
from tests.resume import loops as L

STEPS, AT = 8, 3


def check(*bugs, steps=STEPS, at=AT, **kw):
    return pc.check_resume(L.start, L.step, save=L.save, load=L.load, steps=steps, at=at,
                           config=L.config(*bugs), **kw)


def mismatch(*bugs, **kw) -> pc.ResumeMismatch:
    with pytest.raises(pc.ResumeMismatch) as info:
        check(*bugs, **kw)
    return info.value


def cause_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("  [resume-")]


def test_a_correct_resume_passes_with_a_short_ok_report():
    report = check()
    assert report.ok and report.first_divergent_step is None and report.notes == []
    assert report.losses == report.resumed_losses and len(report.losses) == STEPS
    text = str(report)
    assert text.splitlines()[0] == (
        "ok: resume after step 3 matches the uninterrupted run (8 steps, losses bitwise, "
        f"{len(report.compared)} components compared)")
    assert len(text.splitlines()) <= 2
    for path, kind in [("run.model", "module"), ("run.optimizer", "optimizer"), ("run.scheduler", "scheduler"),
                       ("run.loader", "data"), ("run.loader.generator", "generator"), ("run.ema", "tensors"),
                       ("run.step", "counter"), ("torch", "global-rng"), ("python", "global-rng"),
                       ("numpy", "global-rng")]:
        assert report.compared[path] == kind


# bug -> (note kind, phrases of its one line, first divergent step)
BUG_CLASSES = {
    "optimizer-not-saved": ("resume-optimizer", [
        "run.optimizer (AdamW) state not restored: step, exp_avg and exp_avg_sq of 4 parameters "
        "(body.0.weight, body.0.bias, body.3.weight, ...) are empty after load", "it is not in the checkpoint",
        "fix: save optimizer.state_dict() in your save"], 5),
    "optimizer-not-loaded": ("resume-optimizer", [
        "run.optimizer (AdamW) state not restored",
        'the checkpoint holds it at ["optimizer"], but load does not restore it',
        'fix: load it with optimizer.load_state_dict(checkpoint["optimizer"])'], 5),
    "scheduler-not-restored": ("resume-scheduler", [
        "run.scheduler (LambdaLR) not restored: last_epoch 0 (uninterrupted: 3)",
        'the checkpoint holds it at ["scheduler"]', "fix: load it with scheduler.load_state_dict("], 6),
    "torch-rng-not-restored": ("resume-rng", [
        "the global torch RNG is not restored", 'fix: restore it with torch.set_rng_state(checkpoint["rng"]["torch"])'],
        4),
    "python-rng-not-restored": ("resume-rng", [
        "the global python RNG is not restored", "random.setstate("], 4),
    "numpy-rng-not-restored": ("resume-rng", [
        "the global numpy RNG is not restored", "numpy.random.set_state("], 4),
    "data-position-restarts": ("resume-data", [
        "run.loader's position differs after load: index 0 (uninterrupted: 3)",
        "the resumed run trained at step 4 on the batch the uninterrupted run saw at step 1 "
        "(repeated data: the position restarts)", "fix: save the data position"], 4),
    "data-generator-not-restored": ("resume-rng", [
        "run.loader.generator (Generator) is not restored",
        "consequence: from step 7 the resumed run trains on other batches than the uninterrupted run "
        "(reshuffled data"], 7),
    "counter-not-restored": ("resume-counter", [
        "run.step is 0 after load (uninterrupted: 3): not restored", 'the checkpoint holds it at ["step"]'], 4),
    "weights-before-last-step": ("resume-weights", [
        "run.model (Net) holds the weights after step 2, not the weights after step 3",
        "saved one step behind the optimizer", "fix: save the weights and the optimizer state at the same point"], 4),
    "strict-false-loads-nothing": ("resume-weights", [
        "run.model (Net) is not restored: none of its 4 tensors was restored",
        """the checkpoint's weights (at ["model"]) carry the prefix 'module.', which the model's names do not""",
        "fix: strip 'module.' from the names before loading (or pc.load_into(model, path), which does)"], 4),
    "ema-not-saved": ("resume-weights", [
        "run.ema is not restored: none of its 4 tensors was restored", "it is not in the checkpoint",
        "fix: save run.ema with the checkpoint"], 4),
}


@pytest.mark.parametrize("bug", sorted(BUG_CLASSES))
def test_each_bug_class_is_one_line_of_the_right_kind(bug):
    kind, phrases, first = BUG_CLASSES[bug]
    err = mismatch(bug)
    report = err.report
    assert not report.ok
    assert [n.kind for n in report.notes] == [kind], str(report)
    lines = cause_lines(str(err))
    assert len(lines) == 1 and lines[0].startswith(f"  [{kind}] "), str(report)
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"
    assert report.first_divergent_step == first, str(report)
    assert str(err) == str(report)


def test_the_verdict_comes_first_with_the_step_and_the_losses():
    report = mismatch("torch-rng-not-restored").report
    first = str(report).splitlines()[0]
    exp, act = report.losses[3], report.resumed_losses[3]
    assert first.startswith("resume after step 3 differs from the uninterrupted run from step 4: loss ")
    assert first.endswith(" uninterrupted") and f"{act:.4g} resumed vs {exp:.4g} uninterrupted" in first
    assert report.resumed_losses[:3] == report.losses[:3]
    assert str(report).splitlines()[-1].startswith("  compared: run.model, run.optimizer")


def test_state_that_does_not_change_the_loss_points_at_the_first_step_after_which_it_differs():
    report = mismatch("ema-not-saved").report
    assert report.resumed_losses == report.losses  # the EMA never feeds the loss
    assert str(report).splitlines()[0] == ("resume after step 3 differs from the uninterrupted run after step 4: "
                                           "run.ema differs (the losses match)")


def test_several_causes_at_once_each_get_their_own_line():
    err = mismatch("optimizer-not-loaded", "scheduler-not-restored", "python-rng-not-restored", "counter-not-restored")
    kinds = [n.kind for n in err.report.notes]
    assert kinds == ["resume-optimizer", "resume-scheduler", "resume-rng", "resume-counter"]
    assert len(cause_lines(str(err))) == 4
    assert all("; fix: " in line for line in cause_lines(str(err)))
    assert len(str(err).splitlines()) <= 24  # a screen


def test_a_gradscaler_not_restored_is_a_scaler_cause():
    kw = dict(save=L.amp_save, load=L.amp_load, steps=8, at=3)
    assert pc.check_resume(L.amp_start, L.amp_step, config=L.config(), **kw).ok
    with pytest.raises(pc.ResumeMismatch) as info:
        pc.check_resume(L.amp_start, L.amp_step, config=L.config("scaler-not-restored"), **kw)
    notes = info.value.report.notes
    assert [n.kind for n in notes] == ["resume-scaler"]
    assert notes[0].text.startswith("run.scaler (GradScaler) not restored: scale ")
    assert '; the checkpoint holds it at ["scaler"]' in notes[0].text


def test_state_outside_the_run_is_hidden_state_and_the_note_lists_what_was_compared():
    with pytest.raises(pc.ResumeMismatch) as info:
        pc.check_resume(L.hidden_start, L.hidden_step, save=L.save, load=L.load, steps=6, at=3, config=L.config())
    report = info.value.report
    assert [n.kind for n in report.notes] == ["resume-hidden-state"]
    assert report.first_divergent_step == 4
    text = report.notes[0].text
    assert text.startswith("everything compared matched after load (run.model, run.optimizer, run.scheduler")
    assert "yet step 4 differs (loss): the run holds state the check cannot see" in text


def test_an_unreproducible_loop_raises_not_reproducible_naming_the_first_step():
    with pytest.raises(pc.NotReproducible) as info:
        pc.check_resume(L.start, L.unreproducible_step, save=L.save, load=L.load, steps=4, config=L.config())
    assert info.value.step == 1 and info.value.component == "loss"
    assert "two runs from the same seed differ at step 1 in loss" in str(info.value)


def test_a_loop_unreproducible_only_after_the_resume_point_still_raises_not_reproducible():
    # the second run's first half matches; the resumed run then differs, and the gate runs the second half
    # again before the resume is blamed
    def late_step(run):
        loss, idx = L.step(run)
        return (loss + random.SystemRandom().random() if run.step > 3 else loss), idx

    with pytest.raises(pc.NotReproducible) as info:
        pc.check_resume(L.start, late_step, save=L.save, load=L.load, steps=6, at=3, config=L.config())
    assert info.value.step == 4 and info.value.component == "loss"


def test_unreproducible_state_names_the_component():
    def start():
        model = torch.nn.Linear(2, 1)
        return {"model": model, "noise": torch.zeros(2)}

    def step(run):
        run["noise"] += torch.rand(2, generator=torch.Generator().manual_seed(random.SystemRandom().randrange(9**9)))
        return run["model"](torch.ones(2)).sum().detach()

    with pytest.raises(pc.NotReproducible) as info:
        pc.check_resume(start, step, save=lambda r, p: torch.save(1, p), load=lambda r, p: r, steps=2)
    assert (info.value.step, info.value.component) == (1, 'run["noise"]')


def test_reproducible_false_skips_the_second_run():
    report = check(reproducible=False)
    assert report.ok and report.seconds["reproducible"] < report.seconds["uninterrupted"] / 5


def test_each_resume_point_is_checked_and_the_report_says_which_failed():
    assert check(at=(2, 5)).ok
    with pytest.raises(pc.ResumeMismatch) as info:
        check("warm-flag-not-restored", at=(2, 5))
    report = info.value.report
    assert report.at == (2, 5) and [p.ok for p in report.points] == [True, False]
    assert [n.kind for n in report.notes] == ["resume-counter"]
    lines = str(report).splitlines()
    assert lines[0] == "resume after step 2: ok"
    assert lines[1].startswith("resume after step 5 differs from the uninterrupted run after step 6: run.warm differs")
    assert "run.warm is False after load (uninterrupted: True)" in lines[2]


def test_to_dict_is_json():
    report = mismatch("optimizer-not-loaded", "data-position-restarts").report
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["ok"] is False and data["at"] == 3 and data["steps"] == STEPS
    assert data["first_divergent_step"] == 4
    assert [n["kind"] for n in data["notes"]] == ["resume-optimizer", "resume-data"]
    assert data["compared"]["run.optimizer"] == "optimizer"
    assert data["points"][0]["divergence"]["what"] == "batch"
    assert len(data["resumed_losses"]) == STEPS
    assert json.dumps(check().to_dict(), allow_nan=False)


def test_losses_within_a_tolerance_pass_when_asked():
    report = check(atol=1e-6, rtol=1e-5)
    assert report.ok and "within atol=1e-06, rtol=1e-05" in str(report)


def test_the_callers_global_random_states_are_put_back():
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    mismatch("torch-rng-not-restored")
    assert random.getstate() == before[0]
    assert (np.random.get_state()[1] == before[1]).all()
    assert torch.equal(torch.get_rng_state(), before[2])


def test_a_checkpoint_directory_is_a_checkpoint():
    assert pc.check_resume(L.start, L.step, save=L.dir_save, load=L.dir_load, steps=4, config=L.config()).ok


def test_a_run_with_nothing_beyond_the_weights_says_so():
    def start():
        return {"model": torch.nn.Linear(3, 1)}

    def step(run):
        loss = run["model"](torch.ones(3)).pow(2).sum()
        loss.backward()
        with torch.no_grad():
            for p in run["model"].parameters():
                p -= 0.1 * p.grad
                p.grad = None
        return loss.detach()

    def save(run, path):
        torch.save(run["model"].state_dict(), path)

    def load(run, path):
        run["model"].load_state_dict(torch.load(path))

    report = pc.check_resume(start, step, save=save, load=load, steps=4)
    assert report.ok and report.compared == {'run["model"]': "module"}
    assert "training state beyond the weights" in report.not_compared
    assert report.not_compared["data position"].startswith("step returns no batch")
    assert report.not_compared["torch"] == "no step of the uninterrupted run draws from it"
    assert "not compared: " in str(report)


def stream(*bugs):
    return pc.check_resume(L.stream_start, L.stream_step, save=L.stream_save, load=L.stream_load, steps=6, at=3,
                           config=L.config(*bugs))


def test_data_the_check_cannot_see_is_followed_by_its_batches():
    assert stream().ok  # fast-forwarding the data on resume is a correct resume
    err = mismatch_of(stream, "data-position-restarts")
    assert [n.kind for n in err.report.notes] == ["resume-data"]
    assert cause_lines(str(err))[0] == (
        "  [resume-data] The resumed run trained at step 4 on the batch the uninterrupted run saw at step 1 "
        "(repeated data: the position restarts); 3 of 3 resumed steps trained on another batch; fix: skip the 3 "
        'batches already done (the checkpoint holds 3 at ["step"]) when your load builds the loader again, as a '
        "sampler that skips the done batches does, or save and load the loader's state_dict()")
    assert err.report.first_divergent_step == 4
    skipped = mismatch_of(stream, "data-skips-ahead").report.notes[0]
    assert skipped.kind == "resume-data"
    assert "trained at step 4 on the batch the uninterrupted run saw at step 6 (skipped data" in skipped.text


def mismatch_of(fn, *bugs) -> pc.ResumeMismatch:
    with pytest.raises(pc.ResumeMismatch) as info:
        fn(*bugs)
    return info.value


class Broken:
    def state_dict(self):
        raise RuntimeError("not today")


def test_state_that_cannot_be_read_is_listed_as_not_compared():
    def start():
        run = L.stream_start()
        run["meter"] = Broken()
        return run

    report = pc.check_resume(start, L.stream_step, save=L.stream_save, load=L.stream_load, steps=4)
    assert report.ok
    assert report.not_compared['run["meter"]'] == "its state could not be read: RuntimeError: not today"
    assert 'run["meter"]' not in report.compared


def test_a_tensor_the_run_holds_is_state():
    def start():
        model = torch.nn.Linear(2, 1)
        return {"model": model, "opt": torch.optim.SGD(model.parameters(), lr=0.1), "scale": torch.ones(3)}

    def step(run):
        loss = run["model"](torch.ones(2)).sum() * run["scale"].sum()
        run["opt"].zero_grad()
        loss.backward()
        run["opt"].step()
        run["scale"].mul_(0.9)
        return loss.detach()

    def save(run, path):
        torch.save({"model": run["model"].state_dict(), "opt": run["opt"].state_dict()}, path)

    def load(run, path):
        state = torch.load(path)
        run["model"].load_state_dict(state["model"])
        run["opt"].load_state_dict(state["opt"])

    with pytest.raises(pc.ResumeMismatch) as info:
        pc.check_resume(start, step, save=save, load=load, steps=4)
    [note] = info.value.report.notes
    assert (note.kind, note.text) == ("resume-weights", 'run["scale"] is not restored: after load it holds what '
                                                        "start built; it is not in the checkpoint")


def test_a_clock_the_run_holds_is_left_out_rather_than_failing_the_gate():
    import time

    def start():
        run = L.stream_start()
        run["started"] = time.perf_counter()  # differs in every run, and no loss depends on it
        return run

    def step(run):
        run["seconds"] = time.perf_counter() - run["started"]
        return L.stream_step(run)

    report = pc.check_resume(start, step, save=L.stream_save, load=L.stream_load, steps=4)
    assert report.ok
    assert report.not_compared['run["seconds"]'].startswith("it differs between two uninterrupted runs from the "
                                                            "same seed while every loss matches")
    assert 'run["started"]' in report.not_compared and 'run["seconds"]' not in report.compared
