"""The marked test of a real project, run by real pytest: passes when save and load agree, fails on drift."""

from __future__ import annotations

import re

import pytest

from pytest_ckpt.checks.variations import DEFAULT

pytest_plugins = ["pytester"]


def run(pytester, *args):
    """A subprocess run: torch cannot be imported twice in one process, as inline runs would."""
    return pytester.runpytest_subprocess(*args, timeout=300)


def marked(load: str = "None", variations: str = "", save: str = "None", extra: str = "") -> str:
    return f"""
import pytest
import project
from project import Config, INPUTS, build

@pytest.mark.ckpt_roundtrip({variations})
def test_checkpoint(ckpt):
    ckpt.roundtrip(build, config=Config(), inputs=INPUTS, load={load}, save={save}{extra})
"""


def test_every_default_variation_passes_for_a_real_project(project):
    project.makepyfile(test_ckpt=marked())
    result = run(project, "-v")
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines([f"*test_checkpoint[[]ckpt-{n}[]] PASSED*" for n in DEFAULT])
    assert "ckpt round trips" not in result.stdout.str()  # the summary speaks only when needed


def test_project_save_and_load_receive_the_real_wrappers(project, monkeypatch):
    log = project.path / "save.log"
    monkeypatch.setenv("SAVE_LOG", str(log))
    project.makepyfile(test_ckpt=marked(load="project.load_good", save="project.save_logged"))
    run(project, ).assert_outcomes(passed=9)
    # one line per save, in the variations' order; under fsdp it runs here once first (what does it
    # write? a DCP directory: then every rank runs it), then on each of the two ranks
    assert log.read_text().splitlines() == [
        "Model embed.weight AdamW",  # plain
        "DataParallel module.embed.weight AdamW",
        "DistributedDataParallel module.embed.weight AdamW",  # ddp
        "OptimizedModule _orig_mod.embed.weight AdamW",  # compile
        "OptimizedModule _orig_mod.module.embed.weight AdamW",  # ddp+compile
        "DistributedDataParallel module._orig_mod.embed.weight AdamW",  # compile+ddp
        "Model embed.weight AdamW",  # fsdp: the call that decides where it runs
        "FSDPModel embed.weight AdamW", "FSDPModel embed.weight AdamW",  # fsdp, rank 0 and rank 1
        "Model embed.weight AdamW",  # nested: the training state is written around the weights
        "Model embed.weight AdamW",  # safetensors
    ]


def test_a_loader_that_builds_one_layer_fewer_fails_every_round_trip(project):
    project.makepyfile(test_ckpt=marked(load="project.load_fewer"))
    result = run(project, )
    result.assert_outcomes(failed=9)
    out = result.stdout.str()
    for name in DEFAULT:
        assert f"ckpt-{name} round trip (saved with" in out
    # one report line per variation names the cause and the block range...
    assert len(re.findall(r"^E +\[layer-count\] blocks\.2\.\*", out, re.M)) == 9
    # ...and the summary repeats it, one line per failing test
    assert len(re.findall(r"^FAILED test_ckpt\.py::test_checkpoint\[ckpt-.*\]: \[.*\] "
                          r"\[layer-count\] blocks\.2\.\*", out, re.M)) == 9
    result.stdout.fnmatch_lines(["*9 round trips: 0 passed, 9 failed, 0 skipped*"])


def test_a_loader_that_ignores_the_checkpoint_fails(project):
    project.makepyfile(test_ckpt=marked(load="project.load_fresh", variations='"plain", "nested", "fsdp"'))
    result = run(project, )
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([
        "*CheckpointMismatch: ckpt-plain round trip (saved with torch.save(model.state_dict()), "
        "loaded with project.load_fresh)*",
        "*[[]values[]]*blocks.0-2.*, embed.weight, head.weight equal a freshly built model's, where the saved "
        "model's do not: your load did not copy them",
    ])


def test_outputs_that_depend_on_unsaved_state_fail(project):
    project.makepyfile(test_ckpt="""
        import pytest, torch
        from project import Config, INPUTS, Model

        class Tempered(Model):
            def __init__(self, config):
                super().__init__(config)
                self.temperature = 1 + float(torch.rand(()))  # a plain attribute: never saved

            def forward(self, ids):
                return super().forward(ids) / self.temperature

        def build(config):
            return Tempered(config)

        @pytest.mark.ckpt_roundtrip("plain")
        def test_checkpoint(ckpt):
            ckpt.roundtrip(build, config=Config(), inputs=INPUTS)

        @pytest.mark.ckpt_roundtrip("plain")
        def test_without_inputs(ckpt):
            ckpt.roundtrip(build, config=Config())
    """)
    result = run(project, )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*outputs: output differs (max |Δ| *"])


def test_layers_pass_with_a_strict_loader_and_fail_with_a_lenient_one(project):
    project.makepyfile(
        test_strict=marked(load="project.load_strict_torch", variations='"layers-1", "layers+1"'),
        test_lenient=marked(load="project.load_lenient_torch", variations='"layers-1", "layers+1"'),
        test_default=marked(variations='"layers-1", "layers+1"'),
    )
    result = run(project, "-v")
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines([
        "*test_default.py::test_checkpoint[[]ckpt-layers-1[]] PASSED*",
        "*test_lenient.py::test_checkpoint[[]ckpt-layers-1[]] FAILED*",
        "*test_strict.py::test_checkpoint[[]ckpt-layers+1[]] PASSED*",
    ])
    result.stdout.fnmatch_lines([
        "*your load accepted a checkpoint with one block fewer (num_layers=2 saved, config says 3); "
        "it should raise",
        "*blocks.2.*: block 2 missing: your load built 3 blocks, the checkpoint 2*",
        "*fix: load strictly (load_state_dict(strict=True), or pc.load_into) so that a checkpoint "
        "of another depth raises"])
    result.stdout.fnmatch_lines([
        "*your load accepted a checkpoint with one block more (num_layers=4 saved, config says 3)*",
        "*blocks.3.*: 1 block unexpected: the checkpoint has 4 blocks, your load built 3*"])


def test_layers_return_the_refusal(project):
    project.makepyfile(test_ckpt="""
        import pytest
        import pytest_ckpt as pc
        from project import Config, build

        @pytest.mark.ckpt_roundtrip("layers-1", "layers+1")
        def test_checkpoint(ckpt):
            refusal = ckpt.roundtrip(build, config=Config())
            assert isinstance(refusal, pc.CheckpointMismatch)
            assert [n.kind for n in refusal.diff.notes if n.kind == "layer-count"]
            assert "blocks.3" in str(refusal) or "blocks.2" in str(refusal)

        @pytest.mark.ckpt_roundtrip("layers+1")
        def test_refusal_not_naming_the_blocks(ckpt):
            def load(path):
                raise ValueError("bad checkpoint")
            ckpt.roundtrip(build, config=Config(), load=load)
    """)
    result = run(project, )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*your load refused a checkpoint with one block more*but its "
                                 "error does not name the blocks that differ (blocks.3)*"])


def test_unavailable_variations_are_skipped_with_reasons_in_the_summary(project):
    project.makepyfile(test_ckpt="""
        import pytest
        from project import Config, build

        @pytest.mark.ckpt_roundtrip("plain", "fsdp", "layers-1")
        def test_lambda(ckpt):
            ckpt.roundtrip(lambda: build(Config()))
    """)
    result = run(project, )
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines([
        "*= pytest-ckpt =*",
        "3 round trips: 1 passed, 0 failed, 2 skipped",
        "skipped 1 x fsdp: the factory test_lambda.<locals>.<lambda> is a lambda or a closure, which "
        "another process cannot import; make it a module-level function",
        "skipped 1 x layers-1: needs config=*",
    ])


def test_user_process_group_is_reused_and_ours_is_torn_down(project):
    project.makepyfile(test_ckpt="""
        import pytest
        import torch.distributed as dist
        from project import Config, build

        @pytest.fixture
        def user_group(tmp_path):
            dist.init_process_group("gloo", init_method=(tmp_path / "mine").as_uri(), rank=0, world_size=1)
            yield dist.group.WORLD
            dist.destroy_process_group()

        @pytest.mark.ckpt_roundtrip("ddp")
        def test_reuses(user_group, ckpt):
            ckpt.roundtrip(build, config=Config())
            assert dist.is_initialized() and dist.group.WORLD is user_group

        @pytest.mark.ckpt_roundtrip("ddp", "compile+ddp")
        def test_opens(ckpt):
            assert not dist.is_initialized()
            ckpt.roundtrip(build, config=Config())
            assert dist.is_initialized()

        def test_closed_after():
            assert not dist.is_initialized()
    """)
    run(project).assert_outcomes(passed=4)


def test_parallel_run_gives_the_serial_results(project):
    # the default variations but fsdp and the compiled ones: what runs where is not what this tests
    # (the rank pools run under this suite's own -n 2; compile adds only time)
    in_process = ", ".join(f'"{n}"' for n in DEFAULT if n != "fsdp" and "compile" not in n)
    project.makepyfile(
        test_good=marked(variations=in_process),
        test_drift=marked(load="project.load_fewer", variations='"plain", "ddp", "nested"'),
        test_layers=marked(variations='"layers-1", "layers+1"'),
    )
    # serially: the 3 fewer-layers drifts fail, the rest pass (each file's own tests say so one by one)
    parallel = run(project, "-n", "2", "-p", "xdist")
    parallel.assert_outcomes(passed=7, failed=3)
    parallel.stdout.fnmatch_lines(["*2 workers*", "*= pytest-ckpt =*",
                                   "10 round trips: 7 passed, 3 failed, 0 skipped"])


@pytest.mark.slow
def test_compile_variations_work_with_inductor(project):
    # one variation: inductor's kernels are what this adds (a cold cache compiles them: ~15 s each);
    # the wrappers of ddp+compile and compile+ddp are tested with the default backend
    project.makepyfile(test_ckpt=marked(variations='"compile"'))
    result = run(project, "-o", "ckpt_compile_backend=inductor")
    result.assert_outcomes(passed=1)


def test_a_project_loader_that_raises_gets_the_cause_in_one_line(project):
    # torch's own error lists every key; the failure's first line names the cause under it
    project.makepyfile(test_ckpt=marked(load="project.load_strict_torch",
                                        variations='"plain", "ddp", "nested"'), test_small="""
        import dataclasses
        import pytest
        import torch
        from project import Config, build

        def load_smaller(path):  # builds one block fewer than training, loads strictly
            model = build(dataclasses.replace(Config(), num_layers=2))
            model.load_state_dict(torch.load(path, weights_only=True))
            return model

        @pytest.mark.ckpt_roundtrip("plain")
        def test_checkpoint(ckpt):
            ckpt.roundtrip(build, config=Config(), load=load_smaller)
    """)
    result = run(project, "-p", "no:xdist")
    result.assert_outcomes(passed=1, failed=3)
    out = result.stdout.str()
    assert "Unexpected key(s) in state_dict" in out  # the project's error is quoted
    result.stdout.fnmatch_lines([
        "E   *ckpt-ddp round trip (*): [[]prefix[]] every name your load passes starts with module. "
        "(DataParallel/DDP: the model your save was given is wrapped); your load leaves it on",
        "E   *your load raised at project.py:* in load_strict_torch:",
        "E   *the checkpoint holds every tensor the model your load built needs (14, with their "
        "shapes and dtypes), read as pytest-ckpt reads it:",
        "*fix: strip module. in your load (consume_prefix_in_state_dict_if_present; "
        "pc.load_into(model, path) strips any order), or save the unwrapped model",
    ])
    result.stdout.fnmatch_lines([
        "E   *ckpt-nested round trip (*): [[]nested[]] the weights are nested at trainer.var_wo_ddp "
        "in the checkpoint (14 tensors); your load passes the level above them to load_state_dict",
    ])
    result.stdout.fnmatch_lines([
        "E   *ckpt-plain round trip (*loaded with *load_smaller): [[]layer-count[]] blocks.2.*: 1 block "
        "unexpected: the checkpoint has 3 blocks, your load built 2; num_layers: 3 -> 2",
    ])
    # the session summary names each failure's cause, never an informational note
    result.stdout.fnmatch_lines(["FAILED *test_ckpt.py::test_checkpoint[[]ckpt-ddp[]]: [[]ddp[]] [[]prefix[]] *"])
    assert "] [nested] weights found" not in out
