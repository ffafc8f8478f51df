"""Every check a marker runs is a library call: the same report from a script as from a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import pytest_ckpt as pc
# imported here, not first in a test: the pytester fixture unloads what a test imported, and a second
# copy of a module's classes is not the first (the docs' in-process runs would see both)
import pytest_ckpt.checks.roundtrip  # noqa: F401
import pytest_ckpt.checks.variations.plain  # noqa: F401
import pytest_ckpt.plugin.audit  # noqa: F401
import pytest_ckpt.plugin.fixture  # noqa: F401
import pytest_ckpt.report.run  # noqa: F401
from pytest_ckpt.checks.report import attached
from pytest_ckpt.checks.variations import UnknownVariation
from pytest_ckpt.checks.variations.layers import LayerCountUnknown
from pytest_ckpt.plugin import options as o
from tests.plugin import workers
from tests.plugin.conftest import PROJECT as REAL_PROJECT

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]

PROJECT = '''
import torch
from torch import nn

import pytest_ckpt as pc


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def save(model, path):
    pc.save(model, path)


def load_fresh(path):
    """Ignores the checkpoint."""
    return build()
'''

SCRIPT = '''
import sys

import pytest_ckpt as pc
import proj
from pytest_ckpt.checks.resume_variations import RESUME_VARIATIONS
from pytest_ckpt.checks.variations import VARIATIONS

first = lambda report: str(report).splitlines()[0]
for variation in ("plain", "ddp", "nested"):
    print(first(pc.check_roundtrip(proj.build, variation=variation)))
print(first(pc.check_interrupted(proj.build, save=proj.save)))
try:
    pc.check_roundtrip(proj.build, load=proj.load_fresh)
except pc.CheckpointMismatch as exc:
    print(first(exc))
for variation in (*VARIATIONS.values(), *RESUME_VARIATIONS.values()):  # compile, fsdp, ...: their code
    variation.load()

import torch.distributed as dist

print("process group left open:", dist.is_initialized())
print("pytest imported:", "pytest" in sys.modules)
'''


def test_a_script_runs_the_checks_without_pytest(tmp_path):
    """Round trips and the interrupted check run from a plain script, and no check's module imports
    pytest (compile and fsdp run in the plugin's tests, through the same call)."""
    (tmp_path / "proj.py").write_text(PROJECT)
    (tmp_path / "script.py").write_text(SCRIPT)
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    loaded = "loaded with pc.load_into(proj.build(), path)"
    assert done.stdout.splitlines() == [
        f"ckpt-plain round trip (saved with torch.save(model.state_dict()), {loaded}): ok: 4 tensors match exactly",
        f"ckpt-ddp round trip (saved with torch.save(DDP(model).state_dict()), {loaded}): ok: 4 tensors match exactly",
        'ckpt-nested round trip (saved with torch.save({"epoch", "step", "trainer": {"var_wo_ddp": ...}, '
        f'"optimizer", ...}}), {loaded}): ok: 4 tensors match exactly',
        f"ckpt-interrupted round trip (saved with proj.save, {loaded}): every kill passes: 11 load the previous "
        "checkpoint, 0 the new one",
        "ckpt-plain round trip (saved with torch.save(model.state_dict()), loaded with proj.load_fresh): "
        "[values] the reloaded model's {0,2}.* equal a freshly built model's, where the saved model's do not: "
        "your load did not copy them",
        "process group left open: False",
        "pytest imported: False",
    ]


FAILING = """
import pytest
from project import Config, build, load_fewer


@pytest.mark.ckpt_roundtrip("plain")
def test_drifted(ckpt):
    ckpt.roundtrip(build, config=Config(), load=load_fewer)
"""


def test_a_failing_round_trip_raises_the_text_and_the_report_entry_the_test_shows(pytester, monkeypatch, tmp_path):
    pytester.makepyfile(project=REAL_PROJECT, test_drifted=FAILING)
    monkeypatch.syspath_prepend(str(pytester.path))
    import project as proj

    with pytest.raises(pc.CheckpointMismatch) as info:
        pc.check_roundtrip(proj.build, config=proj.Config(), load=proj.load_fewer, workdir=tmp_path / "lib")
    out = pytester.path / "report.json"
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", f"{o.OPT_REPORT}={out}")
    result.assert_outcomes(failed=1)
    entry = json.loads(out.read_text())["checks"][0]

    text = str(info.value)
    assert text.startswith("ckpt-plain round trip (saved with torch.save(model.state_dict()), loaded with "
                           "project.load_fewer): [layer-count]")
    assert all(line in result.stdout.str() for line in text.splitlines()[:3])
    report = attached(info.value)
    assert report is not None and not report.ok and str(report) == text
    mine = report.to_dict()
    for key in ("kind", "variation", "outcome", "message"):
        assert mine[key] == entry[key], key
    for key in ("ok", "missing", "unexpected", "shape", "dtype", "notes"):  # the rest names the two files
        assert mine["diff"][key] == entry["diff"][key], key


def test_a_variation_that_cannot_run_here_says_why_before_it_starts(tmp_path):
    def closure():
        return nn.Linear(2, 2)

    with pytest.raises(pc.VariationUnavailable, match="the factory .*closure is a lambda or a closure"):
        pc.check_roundtrip(closure, variation="fsdp", workdir=tmp_path)
    with pytest.raises(UnknownVariation, match="unknown variation 'fsdp2'; valid: plain, dataparallel, ddp"):
        pc.check_roundtrip(workers.tiny, variation="fsdp2")


def test_a_config_without_a_layer_field_is_said_before_anything_is_saved(tmp_path):
    with pytest.raises(LayerCountUnknown, match="^ckpt-layers-1: the config has none of the layer fields "
                                                ".*; pass layers_field='<name>' to ckpt.roundtrip$"):
        pc.check_roundtrip(lambda config: nn.Linear(2, 2), variation="layers-1", config={"hidden": 2},
                           workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_passing_round_trip_returns_the_reloaded_model_and_its_report_entry(tmp_path):
    report = pc.check_roundtrip(workers.tiny, variation="safetensors", inputs=torch.randn(2, 4),
                                workdir=tmp_path)
    assert report.ok and isinstance(report.reloaded, nn.Module)
    assert str(report).endswith("ok: 4 tensors match exactly, and the outputs match")
    assert (tmp_path / "model.safetensors").is_file()  # the caller's directory is kept
    entry = report.to_dict()
    assert entry["outcome"] == "passed" and entry["path"] == str(tmp_path / "model.safetensors")
    assert entry["diff"]["ok"] and entry["message"] == ""


# -- the resume check, in any variation -----------------------------------------------------------

def start():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    return {"model": model, "opt": torch.optim.SGD(model.parameters(), lr=0.1)}


def step(run):
    loss = run["model"](torch.ones(2, 3)).pow(2).mean()
    loss.backward()
    run["opt"].step()
    run["opt"].zero_grad()
    return loss


def save(run, path):
    model = getattr(run["model"], "module", run["model"])  # DDP's: the resume loads into the bare model
    torch.save({"model": model.state_dict(), "opt": run["opt"].state_dict()}, path)


def load(run, path):
    state = torch.load(path, weights_only=True)
    run["model"].load_state_dict(state["model"])
    run["opt"].load_state_dict(state["opt"])


def test_check_resume_runs_a_variation_and_opens_and_closes_its_process_group():
    import torch.distributed as dist

    report = pc.check_resume(start, step, save=save, load=load, steps=4, variation="ddp")
    assert report.ok and not dist.is_initialized()
    assert report.compared == {'run["model"]': "module", 'run["opt"]': "optimizer"}


def test_check_resume_refuses_an_unknown_variation_and_a_hook_the_variation_sets_itself():
    with pytest.raises(UnknownVariation, match="unknown variation 'fsdp-reshard-2'; valid: plain, compile"):
        pc.check_resume(start, step, save=save, load=load, variation="fsdp-reshard-2")
    with pytest.raises(TypeError, match="variation='compile' sets the run up itself; leave out wrap="):
        pc.check_resume(start, step, save=save, load=load, variation="compile", wrap=lambda m: m)
