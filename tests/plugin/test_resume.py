"""``@pytest.mark.ckpt_resume`` on a real training loop, run by real pytest: passes when the resume is
exact, fails with the piece of state that broke it, skips when it cannot judge."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from pytest_ckpt.plugin import options as o
from pytest_ckpt.checks.resume_variations import RESUME_DEFAULT, RESUME_VARIATIONS

pytest_plugins = ["pytester"]

#: a real little training loop: dropout (torch's global RNG), AdamW, a warm-up schedule, a data order
#: drawn from its own generator, a step counter; its save and load, correct and forgetful ones
LOOP = textwrap.dedent(
    '''
    import os
    from dataclasses import dataclass

    import torch
    import torch.nn.functional as F
    from torch import nn


    @dataclass
    class Run:
        model: nn.Module
        optimizer: torch.optim.Optimizer
        scheduler: object
        data: torch.Generator
        step: int = 0


    def warmup(step):
        return min(1.0, (step + 1) / 4)


    def start():
        model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 1))
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup)
        return Run(model, optimizer, scheduler, torch.Generator().manual_seed(0))


    def step(run):
        x = torch.randn(8, 4, generator=run.data)
        loss = F.mse_loss(run.model(x), x.sum(dim=1, keepdim=True))
        run.optimizer.zero_grad()
        loss.backward()
        run.optimizer.step()
        run.scheduler.step()
        run.step += 1
        return loss.detach(), x


    def unwrapped(model):
        """The module inside torch.compile's or DDP's wrapper: a resume loads into it, then wraps."""
        model = getattr(model, "_orig_mod", model)
        return getattr(model, "module", model)


    def save(run, path):
        torch.save({"model": unwrapped(run.model).state_dict(), "optimizer": run.optimizer.state_dict(),
                    "scheduler": run.scheduler.state_dict(), "data": run.data.get_state(),
                    "step": run.step, "rng": torch.get_rng_state()}, path)


    def load(run, path):
        state = torch.load(path, weights_only=True)
        run.model.load_state_dict(state["model"])  # the bare model: the variation wraps it after load
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.data.set_state(state["data"])
        run.step = state["step"]
        torch.set_rng_state(state["rng"])


    def load_forgets_scheduler(run, path):
        state = torch.load(path, weights_only=True)
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.data.set_state(state["data"])
        run.step = state["step"]
        torch.set_rng_state(state["rng"])


    def load_reads_a_missing_key(run, path):
        state = torch.load(path, weights_only=True)
        run.model.load_state_dict(state["ema"])


    #: seeded from the OS, outside the run: two runs from the same seed cannot agree
    NOISE = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))


    def step_with_noise(run):
        loss, x = step(run)
        return loss + torch.rand((), generator=NOISE), x
    '''
)


def run(pytester, *args):
    """A subprocess run: torch.compile's modules cannot be imported twice in one process."""
    return pytester.runpytest_subprocess(*args, timeout=300)


@pytest.fixture
def loop(pytester):
    pytester.makepyfile(loop=LOOP)
    return pytester


def report_of(path):
    """The ``--ckpt-report`` document, validated against the published schema."""
    jsonschema = pytest.importorskip("jsonschema")
    from pytest_ckpt.report.run import SCHEMA_PATH

    doc = json.loads(path.read_text())
    jsonschema.validate(doc, json.loads(SCHEMA_PATH.read_text()))
    return doc


def test_a_correct_loop_passes_under_every_default_variation(loop):
    loop.makepyfile(test_train="""
        import pytest
        import loop

        @pytest.mark.ckpt_resume()
        def test_resumes_exactly(ckpt):
            report = ckpt.resume(loop.start, loop.step, save=loop.save, load=loop.load)
            assert report.ok and report.compared["run.scheduler"] == "scheduler"
    """)
    # what a check does is said once it runs 5 s (here at once), between the test lines (issue 26 item 18)
    loop.makeconftest("from pytest_ckpt.report import progress\nprogress.QUIET_S = 0.0\n")
    out = loop.path / "ckpt-report.json"
    result = run(loop, "-v", f"{o.OPT_REPORT}={out}")
    result.assert_outcomes(passed=4)
    assert RESUME_DEFAULT == ("plain", "compile", "ddp", "fresh-process")
    result.stdout.fnmatch_lines([f"*test_resumes_exactly[[]resume-{n}[]] PASSED*" for n in RESUME_DEFAULT])
    result.stdout.fnmatch_lines(["pytest-ckpt: resume-compile: uninterrupted run (* s)",
                                 "pytest-ckpt: resume-compile: second uninterrupted run (the run must agree with "
                                 "itself) (* s)",
                                 "*test_resumes_exactly[[]resume-compile[]] PASSED*",
                                 "pytest-ckpt: resume-fresh-process: resumed half after step 3 running in a fresh "
                                 "process (* s)",
                                 "*test_resumes_exactly[[]resume-fresh-process[]] PASSED*"])
    assert "= pytest-ckpt =" not in result.stdout.str()  # the summary speaks only when needed
    doc = report_of(out)
    checks = {c["variation"]: c for c in doc["checks"]}
    assert set(checks) == set(RESUME_DEFAULT) and doc["summary"] == {"passed": 4}
    for check in checks.values():
        assert check["kind"] == "resume" and check["outcome"] == "passed" and check["diff"] is None
        assert check["resume"]["ok"] and check["resume"]["steps"] == 6 and check["resume"]["at"] == 3
        assert check["resume"]["losses"] == check["resume"]["resumed_losses"]


def test_a_forgotten_scheduler_fails_with_its_cause_first_and_unjudgeable_checks_skip(loop):
    loop.makepyfile(test_train="""
        import pytest
        import loop

        @pytest.mark.ckpt_resume("plain")
        def test_forgets_the_scheduler(ckpt):
            ckpt.resume(loop.start, loop.step, save=loop.save, load=loop.load_forgets_scheduler)

        @pytest.mark.ckpt_resume("plain")
        def test_not_reproducible(ckpt):
            ckpt.resume(loop.start, loop.step_with_noise, save=loop.save, load=loop.load)

        @pytest.mark.ckpt_resume("fresh-process")
        def test_not_importable(ckpt):
            ckpt.resume(lambda: loop.start(), loop.step, save=loop.save, load=loop.load)

        @pytest.mark.ckpt_resume("plain")
        def test_load_raises(ckpt):
            ckpt.resume(loop.start, loop.step, save=loop.save, load=loop.load_reads_a_missing_key)
    """)
    out = loop.path / "ckpt-report.json"
    result = run(loop, "-rs", f"{o.OPT_REPORT}={out}")
    result.assert_outcomes(failed=2, skipped=2)
    text = result.stdout.str()
    # the failure's first line is its first cause; the report follows, verdict first, then the fix
    failure = text[text.index("_ test_forgets_the_scheduler[resume-plain] _"):]
    errors = [line for line in failure.splitlines() if line.startswith("E ")]
    assert re.match(r"E +pytest_ckpt\.errors\.ResumeMismatch: resume-plain: \[resume-scheduler\] run\.scheduler "
                    r"\(LambdaLR\) not restored: last_epoch 0 \(uninterrupted: 3\)", errors[0]), errors[0]
    assert errors[1].split(None, 1)[1].startswith("resume after step 3 differs from the uninterrupted run from step ")
    assert re.match(r"E +\[resume-scheduler\] .*; fix: load it with scheduler\.load_state_dict\(", errors[2])
    assert "check.py" not in failure and "runner.py" not in failure  # no frames of pytest-ckpt's own
    # the project's own error: its traceback, from its own line, then the error naming its function
    raised = text[text.index("_ test_load_raises[resume-plain] _"):]
    assert "run.model.load_state_dict(state[\"ema\"])" in raised and "loop.py:" in raised
    assert "pytest_ckpt/resume" not in raised
    result.stdout.fnmatch_lines([
        "*E * pytest_ckpt.errors.ResumeError: loop.load_reads_a_missing_key raised KeyError: 'ema' (loading the "
        "checkpoint saved after step 3 from *",
    ])
    result.stdout.fnmatch_lines([
        "*= pytest-ckpt =*",
        "4 resume checks: 0 passed, 2 failed, 2 skipped",
        "FAILED test_train.py::test_forgets_the_scheduler[[]resume-plain[]]: [[]resume-scheduler[]] run.scheduler "
        "(LambdaLR) not restored: *",
        "FAILED test_train.py::test_load_raises[[]resume-plain[]]: *ResumeError: loop.load_reads_a_missing_key raised*",
        "skipped 1 x resume-fresh-process: cannot run in a fresh process: the start *<lambda> is a lambda or a "
        "closure, which another process cannot import; make it a module-level function",
        "skipped 1 x resume-plain: the uninterrupted run is not reproducible: two runs from the same seed differ "
        "at step 1 in loss*",
    ])
    doc = report_of(out)
    by_test = {c["test"].split("::")[1]: c for c in doc["checks"]}
    forgets = by_test["test_forgets_the_scheduler[resume-plain]"]
    assert forgets["kind"] == "resume" and forgets["outcome"] == "failed"
    assert forgets["message"].startswith("[resume-scheduler] run.scheduler (LambdaLR) not restored")
    assert [n["kind"] for n in forgets["resume"]["notes"]] == ["resume-scheduler"]
    assert forgets["resume"]["first_divergent_step"] > 3 and not forgets["resume"]["ok"]
    skipped = by_test["test_not_reproducible[resume-plain]"]
    assert skipped["outcome"] == "skipped" and skipped["resume"] is None
    assert skipped["message"].startswith("the uninterrupted run is not reproducible")
    assert doc["summary"] == {"failed": 2, "skipped": 2}


def test_a_load_that_expects_the_wrapper_fails_with_one_cause_line(pytester):
    """API 4.1: the variations wrap after load returns; a load that reaches into the DDP wrapper is told
    so in one line, not torch's traceback (a faithful load-then-wrap port passes: tests/resume)."""
    from tests.resume import wrapped_loop

    pytester.makepyfile(wrapped_loop=Path(wrapped_loop.__file__).read_text())
    pytester.makepyfile(test_wrapped="""
        import pytest
        import wrapped_loop as w

        @pytest.mark.ckpt_resume("ddp")
        def test_load_expects_ddp(ckpt):
            ckpt.resume(w.start, w.step, save=w.save, load=w.load_expects_ddp, steps=4)
    """)
    result = run(pytester, "-p", "no:logging")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    failure = text[text.index("_ test_load_expects_ddp[resume-ddp] _"):text.index("= pytest-ckpt =")]
    errors = [line for line in failure.splitlines() if line.startswith("E ")]
    assert re.match(r"E +pytest_ckpt\.errors\.ResumeError: \[prefix\] wrapped_loop\.load_expects_ddp reaches for "
                    r"\.module, the DistributedDataParallel wrapper's attribute, on a bare GPT \(run\[\"model\"\]\): "
                    r"load receives the run's modules unwrapped .*; fix: restore into the module itself", errors[0])
    assert len(failure.splitlines()) < 30, failure  # one cause, not torch's traceback
    result.stdout.fnmatch_lines([
        "FAILED test_wrapped.py::test_load_expects_ddp[[]resume-ddp[]]: [[]prefix[]] wrapped_loop.load_expects_ddp "
        "reaches for .module*"])


def test_fsdp_shards_on_two_ranks_and_compares_each(loop):
    """Each rank runs the project's functions on a model FSDP2 really shards (the step asserts it)."""
    loop.makepyfile(fsdp_loop="""
        import torch
        import torch.distributed as dist
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor

        import loop


        def start():
            run = loop.start()
            run.model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
            run.optimizer = torch.optim.AdamW(run.model.parameters(), lr=0.01)
            run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, loop.warmup)
            return run


        def step(run):
            assert dist.get_world_size() == 2 and isinstance(run.model, FSDPModule)
            trained = [p for g in run.optimizer.param_groups for p in g["params"]]
            assert all(isinstance(p, DTensor) for p in trained)
            assert trained[0].shape == (8, 4) and trained[0].to_local().shape == (4, 4)  # this rank's half
            return loop.step(run)


        def state(run):
            model, optimizer = get_state_dict(run.model, run.optimizer)
            return {"model": model, "optimizer": optimizer, "scheduler": run.scheduler.state_dict(),
                    "data": run.data.get_state(), "step": run.step}


        def save(run, path):
            dcp.save(state(run), checkpoint_id=path)


        def load(run, path):
            held = state(run)
            dcp.load(held, checkpoint_id=path)
            set_state_dict(run.model, run.optimizer, model_state_dict=held["model"],
                           optim_state_dict=held["optimizer"])
            run.scheduler.load_state_dict(held["scheduler"])
            run.data.set_state(held["data"])
            run.step = held["step"]


        def load_forgets_scheduler(run, path):  # and re-derives the step count elsewhere: ignore="run.step"
            held = state(run)
            dcp.load(held, checkpoint_id=path)
            set_state_dict(run.model, run.optimizer, model_state_dict=held["model"],
                           optim_state_dict=held["optimizer"])
            run.data.set_state(held["data"])
    """)
    loop.makepyfile(test_fsdp="""
        import pytest
        import fsdp_loop as f

        @pytest.mark.ckpt_resume("fsdp")
        def test_resumes_exactly(ckpt):
            assert ckpt.resume(f.start, f.step, save=f.save, load=f.load, steps=4).ok

        @pytest.mark.ckpt_resume("fsdp")
        def test_forgets_the_scheduler(ckpt):
            ckpt.resume(f.start, f.step, save=f.save, load=f.load_forgets_scheduler, steps=4, ignore="run.step")
    """)
    result = run(loop, "-W", "ignore::UserWarning")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "E *ResumeMismatch: resume-fsdp: [[]resume-scheduler[]] run.scheduler (LambdaLR) not restored*",
        # ignore= reaches the ranks: the step count load leaves alone is not a cause
        "*not compared: *run.step (left out with ignore=)*other ranks (this is rank 0's report (of 2); each rank "
        "compares its own shards)*",
        "2 resume checks: 1 passed, 1 failed, 0 skipped",
    ])


# -- collection: marker arguments, selection (no torch is imported: these run in-process) ----------

IDS_ONLY = """
import pytest

@pytest.mark.ckpt_resume()
def test_resume_default(ckpt):
    assert ckpt.variation

@pytest.mark.ckpt_resume("plain", "fresh-process")
def test_resume_chosen(ckpt):
    assert ckpt.variation

@pytest.mark.ckpt_roundtrip()
def test_roundtrip_default(ckpt):
    assert ckpt.variation
"""


def collected(result) -> list[str]:
    return [line.split("::", 1)[1] for line in result.outlines if "::" in line]


def test_the_marker_parametrizes_with_the_default_four_and_is_documented(pytester):
    pytester.makepyfile(IDS_ONLY)
    ids = collected(pytester.runpytest("--collect-only", "-q"))
    assert ids[:6] == ["test_resume_default[resume-plain]", "test_resume_default[resume-compile]",
                       "test_resume_default[resume-ddp]", "test_resume_default[resume-fresh-process]",
                       "test_resume_chosen[resume-plain]", "test_resume_chosen[resume-fresh-process]"]
    assert list(RESUME_VARIATIONS) == ["plain", "compile", "ddp", "fresh-process", "fsdp", "fsdp-reshard-3",
                                      "fsdp-reshard-1"]
    pytester.runpytest("--markers").stdout.fnmatch_lines([
        f"@pytest.mark.{o.MARKER_RESUME}(*variations): *[[]resume-<variation>[]]*no arguments: plain, compile, "
        "ddp, fresh-process. Also: fsdp, fsdp-reshard-3, fsdp-reshard-1."])


@pytest.mark.parametrize("selection, expected", [
    # names of both markers: each marker runs the ones it knows
    ("plain,nested", ["test_resume_default[resume-plain]", "test_resume_chosen[resume-plain]",
                      "test_roundtrip_default[ckpt-plain]", "test_roundtrip_default[ckpt-nested]"]),
    # fsdp is both markers'; where the marker has no arguments the selection replaces its default
    ("fresh-process,fsdp", ["test_resume_default[resume-fresh-process]", "test_resume_default[resume-fsdp]",
                            "test_resume_chosen[resume-fresh-process]", "test_roundtrip_default[ckpt-fsdp]"]),
    # resume-only: round trips have none left (a visible skip)
    ("fresh-process", ["test_resume_default[resume-fresh-process]", "test_resume_chosen[resume-fresh-process]",
                       "test_roundtrip_default[ckpt-none]"]),
    # round-trip-only: resume checks have none left
    ("safetensors", ["test_resume_default[resume-none]", "test_resume_chosen[resume-none]",
                     "test_roundtrip_default[ckpt-safetensors]"]),
])
def test_a_selection_applies_to_each_marker_by_the_names_it_knows(pytester, selection, expected):
    pytester.makepyfile(IDS_ONLY)
    assert collected(pytester.runpytest("--collect-only", "-q", f"{o.OPT_VARIATIONS}={selection}")) == expected


def test_a_selection_that_leaves_a_marker_nothing_says_why_in_the_skip(pytester):
    pytester.makepyfile(IDS_ONLY)
    pytester.makeini(f"[pytest]\n{o.INI_VARIATIONS} = nested\n")
    result = pytester.runpytest("-rs", "-k", "resume")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines([
        "SKIPPED * ckpt_variations=nested selects no resume variation (resume variations: plain, compile, ddp, "
        "fresh-process, fsdp, fsdp-reshard-3, fsdp-reshard-1)",
        "SKIPPED * none of the marker's variations (plain, fresh-process) is selected by ckpt_variations=nested",
    ], consecutive=False)


def test_a_selected_name_neither_marker_knows_is_a_usage_error_listing_both(pytester):
    pytester.makepyfile(IDS_ONLY)
    result = pytester.runpytest(f"{o.OPT_VARIATIONS}=plain,fresh_process")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*unknown variation 'fresh_process'; valid: plain, dataparallel, *, interrupted (ckpt_roundtrip) and plain, "
        "compile, ddp, fresh-process, fsdp, fsdp-reshard-3, fsdp-reshard-1 (ckpt_resume)*"])


@pytest.mark.parametrize("marks, message", [
    ('@pytest.mark.ckpt_resume("plain", "fdsp")',
     "*@pytest.mark.ckpt_resume: unknown variation 'fdsp'; valid: plain, compile, ddp, fresh-process, fsdp, "
     "fsdp-reshard-3, fsdp-reshard-1"),
    ('@pytest.mark.ckpt_resume("nested")',
     "*@pytest.mark.ckpt_resume: unknown variation 'nested'; valid: *fsdp-reshard-1 ('nested' is a round-trip variation: "
     "@pytest.mark.ckpt_roundtrip)"),
    ('@pytest.mark.ckpt_roundtrip("fresh-process")',
     "*@pytest.mark.ckpt_roundtrip: unknown variation 'fresh-process'; valid: *('fresh-process' is a resume "
     "variation: @pytest.mark.ckpt_resume)"),
    ('@pytest.mark.ckpt_resume(variations=["plain"])',
     "*@pytest.mark.ckpt_resume takes variation names only, not variations=; valid: plain, compile*"),
    ('@pytest.mark.ckpt_resume("plain")\n@pytest.mark.ckpt_roundtrip("plain")',
     "test_marks.py::test_x: carries both @pytest.mark.ckpt_roundtrip and @pytest.mark.ckpt_resume; a test "
     "carries one of the two*"),
], ids=["unknown", "round-trip-name", "resume-name", "keyword", "both-markers"])
def test_bad_marker_arguments_are_a_collection_error_that_says_what_is_valid(pytester, marks, message):
    pytester.makepyfile(test_marks=f"import pytest\n\n{marks}\ndef test_x(ckpt):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([message])


def test_each_check_belongs_to_its_own_marker(pytester):
    pytester.makepyfile(test_wrong="""
        import pytest

        @pytest.mark.ckpt_resume("plain")
        def test_round_trip_in_a_resume_test(ckpt):
            ckpt.roundtrip(object)

        @pytest.mark.ckpt_roundtrip("plain")
        def test_resume_in_a_round_trip_test(ckpt):
            ckpt.resume(None, None, save=None, load=None)
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*ckpt.roundtrip(...) runs under @pytest.mark.ckpt_roundtrip(...), and this test is marked "
        "@pytest.mark.ckpt_resume(...): a test carries one of the two markers*",
        "*ckpt.resume(...) runs under @pytest.mark.ckpt_resume(...), and this test is marked "
        "@pytest.mark.ckpt_roundtrip(...)*",
    ])


def test_progress_lines_stay_off_where_no_person_sees_them(pytester):
    """An xdist worker's terminal is not the person's, nor is -qq's: no progress lines there."""
    from pytest_ckpt.plugin.progress import terminal_line

    config = pytester.parseconfigure()
    assert terminal_line(config) is not None
    config.workerinput = {"workerid": "gw0"}
    assert terminal_line(config) is None
    assert terminal_line(pytester.parseconfigure("-qq")) is None
