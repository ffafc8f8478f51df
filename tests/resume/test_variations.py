"""The hooks the pytest variations use: wrap (torch.compile, DDP) and the fresh process."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

import pytest_ckpt as pc
from pytest_ckpt.errors import ResumeUnavailable
from tests.resume import loops as L
from tests.resume import wrapped_loop


def check(*bugs, **kw):
    kw.setdefault("steps", 6)
    kw.setdefault("at", 3)
    return pc.check_resume(L.start, L.step, save=L.save, load=L.load, config=L.config(*bugs), **kw)


def compile_eager(module):
    return torch.compile(module, backend="eager")


def test_compile_wrap_passes_a_correct_loop_and_sees_through_the_wrapper():
    seen = []

    def wrap(module):
        seen.append(type(module).__name__)
        return compile_eager(module)

    report = check(wrap=wrap)
    # every run is wrapped: uninterrupted twice (the first also saves: its first half is the
    # interrupted run), then the resumed run
    assert report.ok and seen == ["Net"] * 3
    assert report.compared["run.model"] == "module"


def test_compile_wrap_still_names_parameters_inside_the_wrapper():
    with pytest.raises(pc.ResumeMismatch) as info:
        check("optimizer-not-loaded", wrap=compile_eager)
    note = info.value.report.notes[0]
    assert note.kind == "resume-optimizer" and "(body.0.weight, body.0.bias, body.3.weight, ...)" in note.text


def save_wrapped_names(run, path):
    L.save(run, path)
    state = torch.load(path, weights_only=False)
    state["model"] = run.model.state_dict()  # the wrapper's own names: _orig_mod.body.0.weight, ...
    torch.save(state, path)


@pytest.mark.parametrize("variation", ["compile", "ddp"])
def test_a_resume_that_loads_then_wraps_passes(variation):
    """minimind's and nanoGPT's shape (API 4.1): their load restores into the bare model, wrapped after;
    it failed with torch's 'Error(s) in loading state_dict for OptimizedModule' (DistributedDataParallel)."""
    met = []

    def load(run, path):
        met.append(type(run["model"]).__name__)
        return wrapped_loop.load(run, path)

    report = pc.check_resume(wrapped_loop.start, wrapped_loop.step, save=wrapped_loop.save, load=load, steps=4,
                             variation=variation)
    assert report.ok and met == ["GPT"]


def test_a_checkpoint_of_the_wrappers_names_loaded_into_the_bare_module_is_one_prefix_cause():
    with pytest.raises(pc.ResumeError) as info:
        pc.check_resume(L.start, L.step, save=save_wrapped_names, load=L.load, steps=4, config=L.config(),
                        wrap=compile_eager, reproducible=False)
    first = str(info.value).splitlines()[0]
    assert first.startswith("[prefix] tests.resume.loops.load restores a bare Net (run.model) from names that carry "
                            "torch.compile's prefix '_orig_mod.' (4 unexpected, 4 missing, raised at loops.py:"), first
    assert first.endswith("fix: save the module inside the wrapper (getattr(model, \"_orig_mod\", model).state_dict()), "
                          "or strip '_orig_mod.' from the names in your load (pc.load_into(model, path) does)")
    assert info.value.__cause__ is None and len(str(info.value).splitlines()) == 2


def test_the_wrapped_module_is_put_back_where_the_run_held_it_and_still_trained():
    runs = []

    def start(config):
        run = L.start(config)
        runs.append(run)
        return run

    pc.check_resume(start, L.step, save=L.save, load=L.load, steps=4, config=L.config(), wrap=compile_eager)
    for run in runs:
        assert type(run.model).__name__ == "OptimizedModule"
        trained = {id(p) for g in run.optimizer.param_groups for p in g["params"]}
        assert trained == {id(p) for p in run.model.parameters()}
    # the uninterrupted run (saved after step 2), the gate's second run up to step 2, the resumed one
    assert [run.step for run in runs] == [4, 2, 4]


@pytest.fixture
def gloo(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    if dist.is_initialized():  # a group another test left open: use it, leave it
        yield
        return
    dist.init_process_group("gloo", init_method=(tmp_path / "rendezvous").resolve().as_uri(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def ddp(module):
    return torch.nn.parallel.DistributedDataParallel(module)


def test_ddp_wrap_on_a_gloo_group_passes_a_correct_loop(gloo):
    report = check(wrap=ddp)
    assert report.ok, str(report)


def test_ddp_wrap_finds_a_bug_through_the_wrapper(gloo):
    with pytest.raises(pc.ResumeMismatch) as info:
        check("scheduler-not-restored", wrap=ddp)
    assert [n.kind for n in info.value.report.notes] == ["resume-scheduler"]


# --------------------------------------------------------------------------- #
# fresh process
# --------------------------------------------------------------------------- #
def _children(marker: Path) -> list[int]:
    """pids of resume children whose command line names a file under ``marker``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "pytest_ckpt.resume.child" in cmd and str(marker) in cmd:
            out.append(int(entry.name))
    return out


@pytest.fixture
def workdir(tmp_path):
    """The check's work directory; no child may outlive the test, whatever the test did."""
    yield tmp_path
    stray = _children(tmp_path)
    for pid in stray:  # tear down even when the test failed
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not stray, f"resume children outlived the check: {stray}"


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds children through /proc")
def test_fresh_process_passes_a_correct_loop(workdir):
    report = check(fresh_process=True, workdir=workdir)
    assert report.ok, str(report)
    assert (workdir / "fresh-process-after-step-3" / "none" / "trace.pt").exists()


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds children through /proc")
def test_fresh_process_finds_a_resume_that_only_works_in_memory(workdir):
    # in this process the kept state is the live optimizer's own tensors: training went on after the
    # save, so they hold step 6 when the resumed run loads them (no copy was ever taken)
    with pytest.raises(pc.ResumeMismatch) as info:
        pc.check_resume(L.start, L.step, save=L.memory_save, load=L.memory_load, steps=6, at=3,
                        config=L.config())
    [note] = info.value.report.notes
    assert note.kind == "resume-optimizer" and "step count 6 (uninterrupted: 3)" in note.text
    # in a fresh process nothing stands in for the checkpoint: the state is simply not there
    with pytest.raises(pc.ResumeMismatch) as info:
        pc.check_resume(L.start, L.step, save=L.memory_save, load=L.memory_load, steps=6, at=3,
                        config=L.config(), fresh_process=True, workdir=workdir)
    [note] = info.value.report.notes
    assert note.kind == "resume-optimizer" and note.text.startswith("run.optimizer (AdamW) state not restored")
    assert "it is not in the checkpoint" in note.text


def load_raises(run, path):
    raise KeyError("ema")


def load_hangs(run, path):
    time.sleep(60)


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds children through /proc")
def test_an_error_in_the_fresh_process_is_raised_in_the_parent(workdir):
    with pytest.raises(pc.ResumeError) as info:
        pc.check_resume(L.start, L.step, save=L.save, load=load_raises, steps=4, config=L.config(),
                        fresh_process=True, workdir=workdir)
    assert str(info.value).startswith(f"{__name__}.load_raises raised KeyError: 'ema' (loading the checkpoint")
    assert "(in the fresh process; its output: " in str(info.value)


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds children through /proc")
def test_a_fresh_process_that_runs_too_long_is_killed(workdir):
    began = time.monotonic()
    with pytest.raises(pc.ResumeError, match=r"the fresh process did not finish within 1s"):
        pc.check_resume(L.start, L.step, save=L.save, load=load_hangs, steps=4, config=L.config(),
                        fresh_process=True, workdir=workdir, timeout=1)
    assert time.monotonic() - began < 30
    assert _children(workdir) == []


def test_functions_a_new_process_cannot_import_are_refused_before_anything_runs():
    def local_start(config):
        raise AssertionError("must not run")

    with pytest.raises(ResumeUnavailable, match=r"cannot run in a fresh process: the start .*local_start is "
                                                r"a lambda or a closure, .*; make it a module-level function"):
        pc.check_resume(local_start, L.step, save=L.save, load=L.load, config=L.config(), fresh_process=True)
    with pytest.raises(ResumeUnavailable, match="cannot run in a fresh process: the config function cannot be "
                                                "pickled"):
        pc.check_resume(L.start, L.step, save=L.save, load=L.load, config=lambda: 0, fresh_process=True)
