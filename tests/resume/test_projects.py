"""pc.check_resume on loops shaped like real projects' resume code (issue 26): their correct resumes pass,
and each bug's first line names its root (the counter, the stream, the loader, the cast), with the evidence."""

from __future__ import annotations

import pytest

import pytest_ckpt as pc
from tests.resume import projects as P

MINIMIND = (P.minimind_start, P.minimind_step, P.minimind_save, P.minimind_load)
NANOGPT = (P.nanogpt_start, P.nanogpt_step, P.nanogpt_save, P.nanogpt_load)
STATEFUL = (P.stateful_start, P.stateful_step, P.stateful_save, P.stateful_load)
LAZY = (P.lazy_start, P.lazy_step, P.lazy_save, P.lazy_load)
PRESTEP = (P.prestep_start, P.prestep_step, P.prestep_save, P.prestep_load)


def check(project, config, **kw) -> pc.ResumeReport:
    start, step, save, load = project
    try:
        return pc.check_resume(start, step, save=save, load=load, steps=6, at=3, config=config, **kw)
    except pc.ResumeMismatch as err:
        return err.report


def first(project, config, **kw):
    report = check(project, config, **kw)
    assert not report.ok, str(report)
    return report.notes[0], report


# -- item 1: evidence, not internals --------------------------------------------------------------

def test_minimind_skip_sampler_resume_passes_its_iterator_count_set_aside():
    report = check(MINIMIND, P.MiniMindArgs())
    assert report.ok, str(report)
    assert 'run["it"]' not in report.compared
    assert report.not_compared['run["it"]'] == (
        "the data pipeline's own bookkeeping (batches yielded 0 (uninterrupted: 3) after load) while every later "
        "batch and loss equals the uninterrupted run's: the data position is where it counts")


def test_a_samplers_own_cursor_is_bookkeeping_too():
    report = check(MINIMIND, P.MiniMindArgs(hold_loader=True))
    assert report.ok, str(report)
    assert report.not_compared['run["loader"].batch_sampler.skip_batches'].startswith(
        "the data pipeline's own bookkeeping (3 (uninterrupted: 0) after load)")


def test_ignore_leaves_out_what_the_project_rebuilds_and_says_so():
    report = check(MINIMIND, P.MiniMindArgs(hold_loader=True), ignore=('run["loader"]', "run.no*", "numpy"))
    assert report.ok
    assert report.not_compared['run["loader"]'] == "left out with ignore="
    assert report.not_compared["numpy"] == "left out with ignore="
    assert report.not_compared["run.no*"] == "ignore= names it, but the run holds nothing there"
    assert not any(p.startswith('run["loader"]') for p in report.compared)
    assert "numpy" not in report.compared and 'run["loader"]' in str(report)


def test_ignore_leaves_the_batches_to_speak():
    note, _ = first(MINIMIND, P.MiniMindArgs(forget_step=True), ignore='run["step"]')
    assert note.kind == "resume-data"
    assert note.text.startswith("The resumed run trained at step 4 on the batch the uninterrupted run saw at step 1")


def test_bookkeeping_is_a_hint_only_when_the_batches_cannot_tell_and_nothing_else_explains():
    note, report = first(MINIMIND, P.MiniMindArgs(forget_skip=True, return_batch=False))
    assert [n.kind for n in report.notes] == ["resume-data"]
    assert note.text == ('run["it"] differs after load: batches yielded 0 (uninterrupted: 3), and step returns no '
                         "batch to tell whether the data position is lost")
    assert note.fix.endswith("; return (loss, batch) from step so the check can follow the batches")
    # with the batches, they tell: the position restarts
    note, _ = first(MINIMIND, P.MiniMindArgs(forget_skip=True))
    assert note.text.startswith("The resumed run trained at step 4 on the batch the uninterrupted run saw at step 1")
    assert note.fix.startswith('skip the 3 batches already done (the checkpoint holds 3 at ["step"] in '
                               "pretrain_8_resume.pth)")


@pytest.mark.parametrize("ignore", [3, (3,), ("",)])
def test_ignore_takes_paths(ignore):
    with pytest.raises(TypeError, match="ignore="):
        check(MINIMIND, P.MiniMindArgs(), ignore=ignore)


# -- item 8: a cast is a cause of its own, with its side -------------------------------------------

def test_minimind_half_save_is_named_as_the_save_casting_to_float16():
    note, _ = first(MINIMIND, P.MiniMindArgs(half=True))
    assert note.kind == "resume-weights"
    assert note.text.startswith('run["model"] (TinyLM): every difference after load is the float16 rounding of the '
                                "uninterrupted run's weights (3 of 3 tensors): your save casts them to float16 "
                                "(the checkpoint holds them as float16 at ")
    assert note.text.endswith("resume restarts from rounded weights while the float32 optimizer moments carry on")
    assert note.fix.startswith("save the weights in the dtype they train in (float32)")


def test_a_load_rounding_through_bfloat16_is_named_as_the_load():
    note, _ = first(MINIMIND, P.MiniMindArgs(load_bf16=True))
    assert "is the bfloat16 rounding of the uninterrupted run's weights (3 of 3 tensors): your load casts them to " \
           "bfloat16 and back (the checkpoint holds them as float32 at " in note.text
    assert note.fix.startswith("load the weights without casting them")


# -- items 6, 16: the root, not its consequence -----------------------------------------------------

def test_minimind_forgotten_step_is_the_counter_and_the_data_follows_it():
    note, report = first(MINIMIND, P.MiniMindArgs(forget_step=True))
    assert [n.kind for n in report.notes] == ["resume-counter"]
    assert note.text.startswith('run["step"] is 0 after load (uninterrupted: 3): not restored; the checkpoint holds it '
                                'at ["step"] in pretrain_8_resume.pth, but load does not restore it; consequence: the '
                                "data position follows it: the resumed run trained at step 4 on the batch the "
                                "uninterrupted run saw at step 1 (repeated data")
    # the file and the key apart (item 9)
    assert note.fix == ('set run["step"] back from checkpoint["step"] in your load (checkpoint: what '
                        "pretrain_8_resume.pth holds)")


def test_an_off_by_one_counter_is_said_restored_off_by_one():
    note, report = first(MINIMIND, P.MiniMindArgs(step_off_by_one=True))
    assert [n.kind for n in report.notes] == ["resume-counter"]
    assert note.text.startswith('run["step"] is 4 after load (uninterrupted: 3): restored off by one (+1); the '
                                'checkpoint holds 3 at ["step"] in pretrain_8_resume.pth; consequence: the data '
                                "position follows it: the resumed run trained at step 4 on the batch the uninterrupted "
                                "run saw at step 5 (skipped data")
    assert note.fix.startswith('set run["step"] = checkpoint["step"] in your load, as saved '
                               '(not checkpoint["step"] + 1)')


def test_nanogpt_without_rng_names_the_stream_and_folds_in_the_batch_fetched_ahead():
    note, report = first(NANOGPT, P.NanoConfig())
    assert [n.kind for n in report.notes] == ["resume-rng"]
    assert note.text.startswith("the global torch RNG is not restored: after load it is where start and your load's "
                                "own draws left it (it changes with the seed the resumed run starts from); it is not "
                                'in the checkpoint; consequence: run["X"] and run["Y"], drawn from it, differ after '
                                "load too; from step 4 the resumed run trains on batches the uninterrupted run never "
                                "saw")
    assert note.fix.endswith('in your load, before your load draws run["X"] and run["Y"]')


def test_nanogpt_with_batches_chosen_by_iter_num_passes_and_a_forgotten_iter_num_is_the_counter():
    assert check(NANOGPT, P.NanoConfig(from_iter=True)).ok
    note, report = first(NANOGPT, P.NanoConfig(from_iter=True, forget_iter_num=True))
    assert [n.kind for n in report.notes] == ["resume-counter"]
    assert note.text.startswith('run["iter_num"] is 0 after load (uninterrupted: 3): not restored; the checkpoint '
                                'holds it at ["iter_num"], but load does not restore it; run["X"] and run["Y"] hold '
                                'their state before step 1 too, as run["iter_num"] says; consequence: the data '
                                "position follows it")
    assert "loader" not in note.fix


def test_a_lost_position_is_the_data_with_the_generator_back_at_the_epoch_start():
    assert check(LAZY, P.LazyConfig()).ok
    note, report = first(LAZY, P.LazyConfig(skip_done=False))
    assert [n.kind for n in report.notes] == ["resume-data"]
    assert note.text.startswith("The resumed run trained at step 4 on the batch the uninterrupted run saw at step 1 "
                                "(repeated data: the position restarts)")
    assert note.text.endswith("run.loader.generator (Generator) is back at its state before step 1, as the checkpoint "
                              'holds it at ["epoch_gen"], so the epoch\'s order is drawn again from its first batch')
    assert note.fix.startswith('skip the 3 batches already done (the checkpoint holds 3 at ["step"]) when your load '
                               "builds the loader again")
    assert report.not_compared["run.it"].startswith("start does not build it (a step does)")


# -- item 7: the owner, not its parts ----------------------------------------------------------------

def test_a_loader_saved_and_not_restored_is_named_as_the_loader():
    assert check(STATEFUL, P.LoaderConfig()).ok
    note, report = first(STATEFUL, P.LoaderConfig(restore_loader=False))
    assert [n.kind for n in report.notes] == ["resume-data"]
    assert note.text.startswith("run.loader (ResumableLoader, with run.loader.gen inside it) is not restored: its "
                                "position is done 0 (uninterrupted: 3), ")
    assert 'the checkpoint holds it at ["loader"], but load does not restore it' in note.text
    assert note.fix == 'load it with run.loader.load_state_dict(checkpoint["loader"]) in your load'


@pytest.mark.parametrize("copy_in_start", [False, True])
def test_weights_saved_before_the_step_name_the_model_not_the_copy(copy_in_start):
    # a copy start builds is state after load like any other: a project that rebuilds it says so
    ignore = ("run.pre_step_model",) if copy_in_start else ()
    correct = check(PRESTEP, P.PreStepConfig(copy_in_start=copy_in_start), ignore=ignore)
    assert correct.ok, str(correct)
    note, report = first(PRESTEP, P.PreStepConfig(save_pre_step=True, copy_in_start=copy_in_start))
    assert [n.kind for n in report.notes] == ["resume-weights"]
    assert note.text.startswith("run.model (TinyLM) holds the weights after step 2, not the weights after step 3, "
                                "while the optimizer's step counts match")
    if copy_in_start:
        assert "they are what run.pre_step_model held after step 3, a copy taken before the step" in note.text
    else:
        assert report.not_compared["run.pre_step_model"].startswith("start does not build it (a step does)")


# -- item 9: a config is one component -----------------------------------------------------------------

def test_a_config_load_sets_to_other_values_is_one_line():
    import dataclasses

    def load(run, path):
        run = P.minimind_load(run, path)
        run["args"] = dataclasses.replace(run["args"], grad_clip=0.5)
        return run

    with pytest.raises(pc.ResumeMismatch) as info:
        pc.check_resume(P.minimind_start, P.minimind_step, save=P.minimind_save, load=load, steps=6, at=3)
    [note] = info.value.report.notes
    assert (note.kind, note.text) == ("resume-state", 'run["args"] (MiniMindArgs) differs after load: grad_clip 0.5 '
                                                      "(uninterrupted: 1)")


def test_a_transformers_config_the_run_holds_is_one_component():
    from transformers import GPT2Config

    def start(cfg=None):
        run = P.minimind_start()
        run["lm_config"] = GPT2Config(n_layer=2, n_embd=8, n_head=2, vocab_size=P.VOCAB)
        return run

    rs = pc.run_state(start())
    config = rs['run["lm_config"]']
    assert config.kind == "config" and not any(p.startswith('run["lm_config"].') for p in rs.paths)
    assert 'run["lm_config"]  config (GPT2Config, ' in str(rs)
    report = pc.check_resume(start, P.minimind_step, save=P.minimind_save, load=P.minimind_load, steps=4)
    assert report.compared['run["lm_config"]'] == "config"
    assert [k for k in report.compared.values()].count("counter") == 2  # epoch and step, not 30 config fields


# -- state a step builds: set aside right after load only while the end shows nothing ------------------

def _ema_start():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    return {"model": model, "opt": torch.optim.SGD(model.parameters(), lr=0.1), "ema": None, "step": 0}


def _train(run):
    import torch

    loss = run["model"](torch.ones(4, 3) * (run["step"] + 1)).pow(2).mean()
    run["opt"].zero_grad()
    loss.backward()
    run["opt"].step()
    run["step"] += 1
    return loss


def _ema_step(run):
    loss = _train(run)
    weights = {k: v.detach().clone() for k, v in run["model"].state_dict().items()}
    if run["ema"] is None:  # built by the first step, as an EMA callback builds its shadow
        run["ema"] = weights
    else:
        for k, v in weights.items():
            run["ema"][k].mul_(0.9).add_(v, alpha=0.1)
    return loss


def _ema_save(run, path):
    import torch

    torch.save({"model": run["model"].state_dict(), "opt": run["opt"].state_dict(), "step": run["step"]}, path)


def _ema_load(run, path):
    import torch

    held = torch.load(path, weights_only=True)
    run["model"].load_state_dict(held["model"])
    run["opt"].load_state_dict(held["opt"])
    run["step"] = held["step"]


def test_a_step_built_ema_that_load_never_restores_is_a_cause_though_every_loss_matches():
    # absent right after load, and still different after the last step while training is unchanged
    report = check((_ema_start, _ema_step, _ema_save, _ema_load), None)
    assert not report.ok, str(report)
    assert report.notes[0].kind == "resume-weights", str(report)
    assert report.notes[0].text.startswith('run["ema"] is not in the run after load'), str(report)


def _module_ema_start():
    import copy

    run = _ema_start()
    run["ema"] = copy.deepcopy(run["model"]).requires_grad_(False)  # an EMA kept as a module: no optimizer trains it
    return run


def _module_ema_step(run):
    import torch

    loss = _train(run)
    with torch.no_grad():
        for e, p in zip(run["ema"].parameters(), run["model"].parameters()):
            e.mul_(0.9).add_(p, alpha=0.1)
    return loss


def test_an_ema_kept_as_a_module_that_the_save_forgets_is_told_to_be_saved_not_loaded_strictly():
    note, report = first((_module_ema_start, _module_ema_step, _ema_save, _ema_load), None)
    assert [n.kind for n in report.notes] == ["resume-weights"], str(report)
    assert note.text == ('run["ema"] (Linear) is not restored: none of its 2 tensors was restored (after load they '
                         'hold what start built)'), note.text
    assert note.fix == 'save run["ema"] with the checkpoint and copy it back in your load'


# -- a copy of the weights is named as one only when every tensor of it is the model's --------------

def _frozen_start():
    import copy

    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    model[0].requires_grad_(False)  # a frozen encoder: the same in the model and its EMA at every step
    return {"model": model, "opt": torch.optim.SGD(model[1].parameters(), lr=0.1),
            "ema": copy.deepcopy(model), "step": 0}


def _frozen_step(run):
    import torch

    loss = _train(run)
    with torch.no_grad():
        for e, p in zip(run["ema"].parameters(), run["model"].parameters()):
            if p.requires_grad:
                e.mul_(0.9).add_(p, alpha=0.1)
    return loss


def _frozen_load(run, path):
    import torch

    held = torch.load(path, weights_only=True)  # the model's weights are never loaded, and no EMA was saved
    run["opt"].load_state_dict(held["opt"])
    run["step"] = held["step"]


def test_a_module_that_shares_only_frozen_tensors_with_the_model_is_no_copy_of_it():
    note, report = first((_frozen_start, _frozen_step, _ema_save, _frozen_load), None)
    assert [(n.kind, n.text.split(" ")[0]) for n in report.notes] == [
        ("resume-weights", 'run["model"]'), ("resume-weights", 'run["ema"]')], str(report)
    assert report.notes[1].text.startswith('run["ema"] (Sequential) is not restored: none of its 4 tensors'), str(report)
    assert "a copy taken before the step" not in str(report)
