"""``fsdp-reshard-3`` and ``fsdp-reshard-1``: a real FSDP2 loop saved on 2 gloo ranks, resumed on 3 and
on 1 (real rank processes, the reused rank workers); a data position kept per rank is ``resume-data``."""

from __future__ import annotations

import pytest

from pytest_ckpt.errors import ResumeMismatch
from pytest_ckpt.checks.resume_variations.base import ResumeJob
from pytest_ckpt.checks.resume_variations.fsdp_reshard import FSDP_RESHARD_1, FSDP_RESHARD_3
from tests.plugin import reshard_loop as L

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def job(tmp_path, step=L.step, save=L.save, load=L.load):
    return ResumeJob("fsdp-reshard", L.start, step, save, load, steps=4, at=2, workdir=tmp_path)


def test_a_world_size_aware_loop_resumes_on_3_and_on_1_ranks(tmp_path):
    for variation in (FSDP_RESHARD_3, FSDP_RESHARD_1):
        report = variation.check(job(tmp_path / str(variation.world_size)))
        assert report.ok and report.compared == {"run.model": "module", "run.optimizer": "optimizer"}
        assert "losses within atol=1e-05, rtol=0.0001" in str(report)
        assert "saved on 2 ranks, resumed on" in report.not_compared["the continuation bitwise"]


def test_a_data_position_kept_per_rank_is_resume_data_naming_the_ranks(tmp_path):
    with pytest.raises(ResumeMismatch) as on_3:
        FSDP_RESHARD_3.check(job(tmp_path / "3", L.step_per_rank, L.save_per_rank, L.load_per_rank))
    with pytest.raises(ResumeMismatch) as on_1:
        FSDP_RESHARD_1.check(job(tmp_path / "1", L.step_per_rank, L.save_per_rank, L.load_per_rank))
    (note,) = on_3.value.report.notes
    assert note.kind == "resume-data" and note.names == ("rank 0", "rank 1", "rank 2")
    assert note.text.startswith(
        "the data position does not carry from 2 to 3 ranks: over steps 3-4 ranks 0, 1 and 2 train on 6 samples "
        "the uninterrupted run never trained on (at step 4 on ranks 0, 1 and 2) and skip 6 samples "
        "(sample 12 of step 3, sample 13 of step 3, sample 14 of step 3, ...)")
    assert "a global offset" in note.fix
    # on 1 rank the per-rank position restarts a step behind: step 2's samples again, step 4's never
    (note,) = on_1.value.report.notes
    assert note.kind == "resume-data" and note.names == ("rank 0",)
    assert ("rank 0 trains again on 6 samples (sample 6 of step 2 at step 3 on rank 0; sample 7 of step 2 at "
            "step 3 on rank 0; sample 8 of step 2 at step 3 on rank 0, ...) and skips 6 samples (sample 18 of "
            "step 4") in note.text
    assert on_1.value.report.first_divergent_step == 3


def test_the_state_right_after_load_on_3_ranks_is_compared_bitwise(tmp_path):
    """A load that restores the weights and not the optimizer: the gathered optimizer state is the cause."""
    with pytest.raises(ResumeMismatch) as info:
        FSDP_RESHARD_3.check(job(tmp_path, load=L.load_model_only))
    report = info.value.report
    assert [n.kind for n in report.notes] == ["resume-optimizer"]
    assert report.notes[0].text == ("run.optimizer (AdamW) differs after load: step, exp_avg and exp_avg_sq of 4 "
                                    "parameters (0.weight, 0.bias, 2.weight, ...) are empty after load")
    assert report.points[0].differs_after_load == ["run.optimizer"]
    # the final weights are not compared (the report says why): the later losses are the continuation
    assert "(2 components, right after load; losses of every step, within atol=1e-05, rtol=0.0001)" in str(report)
    assert "the final state" in report.not_compared


def test_the_marker_runs_both_world_sizes_and_names_the_cause(pytester):
    """``@pytest.mark.ckpt_resume("fsdp-reshard-3", "fsdp-reshard-1")`` on a per-rank position: both fail."""
    pytester.makepyfile(test_loop="""
        import pytest
        from tests.plugin import reshard_loop as L

        @pytest.mark.ckpt_resume("fsdp-reshard-3", "fsdp-reshard-1")
        def test_resumes(ckpt):
            ckpt.resume(L.start, L.step_per_rank, save=L.save_per_rank, load=L.load_per_rank, steps=4, at=2)
    """)
    result = pytester.runpytest_inprocess("-W", "ignore::UserWarning", "-W", "ignore::FutureWarning")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "2 resume checks: 0 passed, 2 failed, 0 skipped"])
    for line in ("FAILED test_loop.py::test_resumes[[]resume-fsdp-reshard-3[]]: [[]resume-data[]] the data position "
                 "does not carry from 2 to 3 ranks: *",
                 "FAILED test_loop.py::test_resumes[[]resume-fsdp-reshard-1[]]: [[]resume-data[]] the data position "
                 "does not carry from 2 to 1 ranks: over steps 3-4 rank 0 trains again on 6 samples *"):
        result.stdout.fnmatch_lines([line])


def test_a_model_fsdp2_cannot_shard_skips_with_its_reason_under_fsdp_and_fsdp_reshard(tmp_path):
    from pytest_ckpt.checks.resume_variations.fsdp import FSDP
    from pytest_ckpt.checks.variations.registry import VariationUnavailable

    for variation in (FSDP_RESHARD_1, FSDP):
        with pytest.raises(VariationUnavailable, match="FSDP2 cannot shard run.model .*scalar"):
            variation.check(ResumeJob("x", L.start_scalar, L.step, L.save, L.load, steps=4, at=2,
                                      workdir=tmp_path / type(variation).__name__))
    assert FSDP_RESHARD_1.check(job(tmp_path / "after")).ok  # the rank workers stayed usable
