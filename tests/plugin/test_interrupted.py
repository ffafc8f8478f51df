"""``@pytest.mark.ckpt_roundtrip("interrupted")``: real saves killed for real at each file boundary,
judged in a real pytest run (the check itself: tests/checks/test_interrupted.py)."""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]

MARKED = """
import os
import torch
import pytest
import pytest_ckpt as pc
from project import Config, build


def save_in_place(model, path):
    torch.save(model.state_dict(), path)


def save_pc(model, path):
    pc.save(model, path)


@pytest.mark.ckpt_roundtrip("interrupted")
@pytest.mark.parametrize("save", [save_in_place, save_pc, None], ids=["in-place", "pc-save", "no-save"])
def test_checkpoint(ckpt, save):
    ckpt.roundtrip(build, config=Config(), save=save)
"""


def test_the_marker_fails_an_in_place_save_and_passes_atomic_ones(project):
    project.makepyfile(test_ckpt=MARKED)
    out_json = project.path / "ckpt-report.json"
    result = project.runpytest_subprocess("-v", "-p", "no:cacheprovider", f"--ckpt-report={out_json}", timeout=300)
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*test_checkpoint[[]ckpt-interrupted-in-place[]] FAILED*",
        "*test_checkpoint[[]ckpt-interrupted-pc-save[]] PASSED*",
        "*ckpt-interrupted round trip (saved with test_ckpt.save_in_place, loaded with "
        "pc.load_into(project.build(config), path)): 1 of 2 kills breaks your checkpoint*",
        "*outcomes: 1 pass, 1 hard fail, 0 silent divergence, 0 lost work (2 file boundaries of your save)*",
        "*[[]hard fail[]] torn model.pt at 50%: your load raised CheckpointError: .../model.pt: truncated*",
        "*fix: save to a temporary name in the same directory, then os.replace it over the path*",
    ])
    assert "pass save= (your training's save)" in out  # the skip says why
    # the report counts each save's kills by outcome, and the run's
    jsonschema = pytest.importorskip("jsonschema")
    from pytest_ckpt.report.run import SCHEMA_PATH

    doc = json.loads(out_json.read_text())
    jsonschema.validate(doc, json.loads(SCHEMA_PATH.read_text()))
    by_id = {c["test"].rpartition("[")[2]: c for c in doc["checks"]}
    in_place, atomic = by_id["ckpt-interrupted-in-place]"], by_id["ckpt-interrupted-pc-save]"]
    assert in_place["interrupted"]["counts"] == {"pass": 1, "hard fail": 1, "silent divergence": 0, "lost work": 0}
    n = len(atomic["interrupted"]["outcomes"])
    assert atomic["interrupted"]["counts"] == {"pass": n, "hard fail": 0, "silent divergence": 0, "lost work": 0}
    assert doc["interrupted"] == {"checks": 2, "kills": {"pass": n + 1, "hard fail": 1, "silent divergence": 0,
                                                         "lost work": 0}}
    result.stdout.fnmatch_lines([f"interrupted: {n + 2} kills of 2 saves: {n + 1} pass, 1 hard fail, "
                                 "0 silent divergence, 0 lost work"])
