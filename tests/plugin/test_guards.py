"""Snapshots, the strict-load audit and the JSON report, run by real pytest on a real project."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch  # noqa: F401  (imported before any inline run: see run())

from pytest_ckpt.plugin import options as o

pytest_plugins = ["pytester"]

SNAPSHOT_TEST = """
import os
from project import Config, build

def test_architecture(ckpt_snapshot):
    layers = int(os.environ.get("LAYERS", "3"))
    config = Config(num_layers=layers)
    ckpt_snapshot.assert_match(build(config), config=config)
"""


def run(pytester, *args, inline=False, **env):
    """A pytest run of the project. ``inline``: in this process, for snapshot checks and the audit (torch
    is imported here already, so the run imports nothing torch cannot import twice; 4 s less a run);
    round trips (torch.compile, process groups) and xdist runs go to a subprocess."""
    for key, value in env.items():
        pytester._monkeypatch.setenv(key, value)
    if inline:
        return pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=300)


def snapshot_file(pytester) -> Path:
    return pytester.path / o.DEFAULT_SNAPSHOT_DIR / "test_snap" / "test_architecture.json"


def test_snapshot_workflow(project):
    project.makepyfile(test_snap=SNAPSHOT_TEST)
    golden = snapshot_file(project)

    first = run(project, inline=True)  # no snapshot yet: fail, write nothing
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines(["*no golden schema snapshot at*--ckpt-update*"])
    assert not golden.exists()

    run(project, o.OPT_UPDATE, inline=True).assert_outcomes(passed=1)  # written
    assert golden.exists()
    text = golden.read_text()
    assert json.loads(text)["config"]["num_layers"] == 3

    run(project, inline=True).assert_outcomes(passed=1)  # rerun: match

    changed = run(project, LAYERS="2", inline=True)  # model changed: fail naming the block, file untouched
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(["*blocks.2.*", "*--ckpt-update*"])
    assert golden.read_text() == text

    run(project, o.OPT_UPDATE, LAYERS="2", inline=True).assert_outcomes(passed=1)  # accepted
    assert "blocks.2." not in golden.read_text()
    run(project, LAYERS="2", inline=True).assert_outcomes(passed=1)


def test_snapshot_workflow_under_xdist(project):
    # the same files from a worker: written under --ckpt-update, compared (and left alone) after
    project.makepyfile(test_snap=SNAPSHOT_TEST)
    golden = snapshot_file(project)
    workers = ("-p", "xdist", "-n", "1")  # one test: one worker runs it
    run(project, o.OPT_UPDATE, *workers).assert_outcomes(passed=1)
    text = golden.read_text()
    assert json.loads(text)["config"]["num_layers"] == 3
    changed = run(project, *workers, LAYERS="2")
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(["*blocks.2.*", "*--ckpt-update*"])
    assert golden.read_text() == text


def test_snapshot_dir_ini_and_named_snapshots_and_stale_files(project):
    project.makeini("[pytest]\nckpt_snapshot_dir = golden\n")
    project.makepyfile(test_snap="""
from project import Config, build

def test_two(ckpt_snapshot):
    ckpt_snapshot.assert_match(build(Config()), name="base")
    ckpt_snapshot.assert_match(build(Config()).state_dict(), name="sd")
""")
    stale = project.path / "golden" / "test_snap" / "test_gone.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    result = run(project, o.OPT_UPDATE, inline=True)
    result.assert_outcomes(passed=1)
    assert (project.path / "golden" / "test_snap" / "test_two.base.json").exists()
    assert (project.path / "golden" / "test_snap" / "test_two.sd.json").exists()
    result.stdout.fnmatch_lines(["*1 snapshot file(s) no test of this run used*", "*test_gone.json"])
    assert stale.exists()  # reported, never deleted


AUDIT_TEST = """
import torch
from project import Config, build

def test_drops_a_layer():
    full = build(Config()).state_dict()
    partial = {k: v for k, v in full.items() if not k.startswith("blocks.2.")}
    build(Config()).load_state_dict(partial, strict=False)

def test_full_load():
    build(Config()).load_state_dict(build(Config()).state_dict(), strict=False)

def test_fails_anyway_after_dropping():
    partial = {k: v for k, v in build(Config()).state_dict().items() if not k.startswith("blocks.1.")}
    build(Config()).load_state_dict(partial, strict=False)
    assert False, "outputs differ"
"""


def test_audit_catches_a_dropping_strict_false_load_and_is_silent_otherwise(project):
    project.makepyfile(test_audit=AUDIT_TEST)
    run(project, inline=True).assert_outcomes(passed=2, failed=1)  # off by default: nothing changes
    result = run(project, o.OPT_AUDIT_LOADS, inline=True)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*test_drops_a_layer*",
        "*--ckpt-audit-loads: 1 load_state_dict(strict=False) call(s) silently dropped keys:*",
        "*test_audit.py:7: Model.load_state_dict(strict=False) silently dropped 4 missing (blocks.2.*)*",
    ])
    result.stdout.fnmatch_lines([  # a test that fails anyway still says what was dropped
        "*AssertionError: outputs differ*",
        "*--ckpt-audit-loads: load_state_dict(strict=False) also silently dropped keys:*",
        "*test_audit.py:14: Model.load_state_dict(strict=False) silently dropped 4 missing (blocks.1.*)*",
    ])
    project.makeini("[pytest]\nckpt_audit_loads = true\n")
    run(project, inline=True).assert_outcomes(passed=1, failed=2)


def test_audit_passes_safetensors_load_model_of_a_tied_model_and_names_the_callers_line(project):
    # load_model writes a tied weight once and loads it through the tie: nothing is dropped
    project.makepyfile(test_audit="""
from safetensors.torch import load_model, save_model
from project import Config, build

def test_tied(tmp_path):
    save_model(build(Config()), str(tmp_path / "m.safetensors"))
    load_model(build(Config()), str(tmp_path / "m.safetensors"))

def test_drops_a_block(tmp_path):
    save_model(build(Config(num_layers=2)), str(tmp_path / "m.safetensors"))
    load_model(build(Config()), str(tmp_path / "m.safetensors"), strict=False)
""")
    result = run(project, o.OPT_AUDIT_LOADS, inline=True)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*test_audit.py:10: Model.load_state_dict(strict=False) silently dropped 4 missing (blocks.2.*)",
    ])
    assert "head.weight" not in result.stdout.str()


REPORT_TESTS = """
import pytest
from project import Config, build, load_fewer

@pytest.mark.ckpt_roundtrip("plain", "nested", "fsdp")
def test_good(ckpt):
    ckpt.roundtrip(lambda c: build(c), config=Config())

@pytest.mark.ckpt_roundtrip("plain", "safetensors")
def test_drifted(ckpt):
    ckpt.roundtrip(build, config=Config(), load=load_fewer)

def test_snapshot(ckpt_snapshot):
    ckpt_snapshot.assert_match(build(Config()))
"""


@pytest.mark.parametrize("workers", [[], ["-p", "xdist", "-n", "2"]], ids=["serial", "xdist"])
def test_json_report_validates_and_the_summary_names_causes(project, workers):
    jsonschema = pytest.importorskip("jsonschema")
    from pytest_ckpt.report.run import SCHEMA_PATH

    project.makepyfile(test_report=REPORT_TESTS)
    out = project.path / "ckpt-report.json"
    result = run(project, f"{o.OPT_REPORT}={out}", *workers)
    result.assert_outcomes(passed=2, failed=3, skipped=1)
    result.stdout.fnmatch_lines([
        "*= pytest-ckpt =*",
        "5 round trips: 2 passed, 2 failed, 1 skipped",
        "FAILED test_report.py::test_drifted[[]ckpt-plain[]]: [[]plain[]] [[]layer-count[]] blocks.2.*",
        "FAILED test_report.py::test_snapshot: [[]snapshot[]] no golden schema snapshot*",
        "skipped 1 x fsdp: *",
    ])
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, json.loads(SCHEMA_PATH.read_text()))
    by_test = {(c["test"], c["kind"]): c for c in doc["checks"]}
    drifted = by_test[("test_report.py::test_drifted[ckpt-safetensors]", "roundtrip")]
    assert drifted["outcome"] == "failed" and drifted["variation"] == "safetensors"
    assert drifted["diff"]["missing"] == [] and drifted["diff"]["unexpected"]
    assert by_test[("test_report.py::test_good[ckpt-nested]", "roundtrip")]["outcome"] == "passed"
    assert by_test[("test_report.py::test_snapshot", "snapshot")]["outcome"] == "failed"
    assert doc["summary"] == {"passed": 2, "failed": 3, "skipped": 1}
    assert doc["workers"] == (2 if workers else 0)


def test_no_summary_section_when_everything_passed(project):
    project.makepyfile(test_ok="""
import pytest
from project import Config, build

@pytest.mark.ckpt_roundtrip("plain")
def test_ok(ckpt):
    ckpt.roundtrip(build, config=Config())
""")
    result = run(project)
    result.assert_outcomes(passed=1)
    assert "pytest-ckpt" not in result.stdout.str()


def test_audit_ignores_drops_declared_intended(project):
    # a projection kept fresh on purpose (Chinese-CLIP), LoRA bases: the audit can stay on
    project.makepyfile(test_audit="""
import pytest
from project import Config, build

def without(prefix):
    return {k: v for k, v in build(Config()).state_dict().items() if not k.startswith(prefix)}

@pytest.mark.ckpt_audit_allow("blocks.2.*")
def test_marked():
    build(Config()).load_state_dict(without("blocks.2."), strict=False)

def test_by_ini():
    build(Config()).load_state_dict(without("blocks.1.norm."), strict=False)

@pytest.mark.ckpt_audit_allow("blocks.2.*")
def test_more_than_allowed():
    build(Config()).load_state_dict(without("blocks."), strict=False)
""")
    project.makeini("[pytest]\nckpt_audit_allow =\n    blocks.1.norm.*\n")
    result = run(project, o.OPT_AUDIT_LOADS, inline=True)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*test_audit.py:16: Model.load_state_dict(strict=False) silently dropped 6 missing "
        "(blocks.0.*, blocks.1.fc.bias, blocks.1.fc.weight)",
        "*a drop that is intended: @pytest.mark.ckpt_audit_allow(\"<name pattern>\") on the test, "
        "or ini ckpt_audit_allow",
    ])


def test_update_lists_what_it_wrote_and_keeps_the_snapshots_of_tests_not_run(project):
    project.makepyfile(test_snap="""
from project import Config, build

def test_a(ckpt_snapshot):
    ckpt_snapshot.assert_match(build(Config()))

def test_b(ckpt_snapshot):
    ckpt_snapshot.assert_match(build(Config()))
""")
    result = run(project, o.OPT_UPDATE, inline=True)
    result.stdout.fnmatch_lines(["wrote 2 snapshot files:",
                                 f"  {o.DEFAULT_SNAPSHOT_DIR}/test_snap/test_a.json",
                                 f"  {o.DEFAULT_SNAPSHOT_DIR}/test_snap/test_b.json"])
    gone = project.path / o.DEFAULT_SNAPSHOT_DIR / "test_snap" / "test_gone.json"
    gone.write_text("{}")
    for selection in (["-k", "test_a"], ["test_snap.py::test_a"]):
        result = run(project, o.OPT_UPDATE, *selection, inline=True)
        result.assert_outcomes(passed=1)
        out = result.stdout.str()
        assert "test_b.json" not in out  # deselected, not unused
        assert "snapshot file:" not in out and "snapshot files:" not in out  # unchanged: none written
        result.stdout.fnmatch_lines(["1 snapshot file(s) no test of this run used*", "*test_gone.json"])
