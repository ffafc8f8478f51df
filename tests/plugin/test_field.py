"""Field findings (issue 13), each on the shape it was found in: a failure names its cause and
the code at fault, a correct project is never red, bad usage is said up front.

Each test is one real pytest run on a small real project (several cases per run: every run
pays torch's import once).
"""

from __future__ import annotations

import re
import textwrap

import pytest

pytest_plugins = ["pytester"]


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", *args,
                                         timeout=300)


def section(out: str, test: str) -> list[str]:
    """The lines of one test's failure report."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("_") and f" {test} " in line)
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith(("_", "=")) and lines[i].endswith(("_", "="))), len(lines))
    return lines[start:end]


#: the issue's code, as it was reported: training saves 4 blocks, serving builds 3
ISSUE = '''
from dataclasses import dataclass
import torch
from torch import nn

@dataclass
class Config: num_layers: int = 4; dim: int = 8
SERVE = Config(num_layers=3)
class Net(nn.Module):
    def __init__(self, cfg): super().__init__(); self.blocks = nn.ModuleList(nn.Linear(cfg.dim, cfg.dim) for _ in range(cfg.num_layers))
def save_checkpoint(model, path): torch.save({"epoch": 1, "model_state": model.state_dict()}, path)
def load_for_inference(path):
    m = Net(SERVE); m.load_state_dict(torch.load(path, weights_only=True)["model_state"]); return m
'''

#: what the other projects did: their saves and loads, each with one finding
FIELD = '''
import dataclasses
import torch
from torch import nn
from proj import Config


class Normed(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(cfg.dim, cfg.dim) for _ in range(cfg.num_layers))
        self.norm = nn.BatchNorm1d(cfg.dim)

    def forward(self, x):
        for block in self.blocks:
            x = torch.tanh(block(x))
        return self.norm(x)


def strict_load(path):
    model = Normed(Config())
    model.load_state_dict(torch.load(path, weights_only=True))
    return model


def save_parameters_only(model, path):  # drops BatchNorm's running stats
    torch.save({n: p.detach() for n, p in model.named_parameters()}, path)


def save_compiled(model, path):  # training's model is compiled inside: _orig_mod. stays in
    torch.save(torch.compile(model).state_dict(), path)


def load_half(path):  # serving casts
    return strict_load(path).half()


def load_bf16(path):
    return strict_load(path).to(torch.bfloat16)


def save_with_args(model, path, *, config):  # nanoGPT: the model's args travel with the weights
    torch.save({"model_args": dataclasses.asdict(config), "model": model.state_dict()}, path)


def load_from_args(path):  # builds what the checkpoint says; its values pass through float16
    ckpt = torch.load(path, weights_only=True)
    model = Normed(Config(**ckpt["model_args"]))
    model.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                           for k, v in ckpt["model"].items()})
    return model


def load_fixed_depth(path):  # always 3 blocks: right for the 3-block checkpoint only
    model = Normed(Config(num_layers=3))
    model.load_state_dict(torch.load(path, weights_only=True)["model"])
    return model


class Var(nn.Module):  # VAR: the depth also sets the width
    def __init__(self, cfg):
        super().__init__()
        width = 4 * cfg.num_layers
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(cfg.num_layers))


def load_var(path):  # strict=False: torch still raises, naming sizes only
    model = Var(Config())
    model.load_state_dict(torch.load(path, weights_only=True), strict=False)
    return model


def save_rounded(model, path):  # a lossy export: float16 values in float32 tensors
    torch.save({k: v.half().float() if v.is_floating_point() else v
                for k, v in model.state_dict().items()}, path)
'''

FIELD_TESTS = '''
import pytest
import torch
import field
from proj import Config, Net, save_checkpoint, load_for_inference

X = torch.randn(4, 8)

@pytest.mark.ckpt_roundtrip("plain")
def test_issue_example(ckpt):
    ckpt.roundtrip(Net, config=Config(), save=save_checkpoint, load=load_for_inference)

@pytest.mark.ckpt_roundtrip("plain")
def test_save_drops_running_stats(ckpt):
    ckpt.roundtrip(field.Normed, config=Config(), save=field.save_parameters_only, load=field.strict_load)

@pytest.mark.ckpt_roundtrip("plain")
def test_save_leaves_orig_mod(ckpt):
    ckpt.roundtrip(field.Normed, config=Config(), save=field.save_compiled, load=field.strict_load)

@pytest.mark.ckpt_roundtrip("plain")
def test_load_casts(ckpt):
    ckpt.roundtrip(field.Normed, config=Config(), load=field.load_half)

@pytest.mark.ckpt_roundtrip("plain")
def test_load_casts_with_inputs(ckpt):
    ckpt.roundtrip(field.Normed, config=Config(), load=field.load_bf16, inputs=X)

@pytest.mark.ckpt_roundtrip("plain")
def test_load_casts_declared(ckpt):
    ckpt.roundtrip(field.Normed, config=Config(), load=field.load_bf16, inputs=X, dtype=torch.bfloat16)

@pytest.mark.ckpt_roundtrip("layers-1", "layers+1")
def test_load_builds_from_checkpoint_args(ckpt):
    model = ckpt.roundtrip(field.Normed, config=Config(), save=field.save_with_args,
                           load=field.load_from_args, atol=1e-2)
    assert len(model.blocks) == (3 if ckpt.variation == "layers-1" else 5)

@pytest.mark.ckpt_roundtrip("layers-1")
def test_load_builds_one_depth(ckpt):
    ckpt.roundtrip(field.Normed, config=Config(), save=field.save_with_args, load=field.load_fixed_depth)

@pytest.mark.ckpt_roundtrip("layers-1")
def test_refusal_by_sizes_only(ckpt):
    ckpt.roundtrip(field.Var, config=Config(), load=field.load_var)

@pytest.mark.ckpt_roundtrip("plain")
def test_rounding_propagates(ckpt):
    ckpt.roundtrip(field.Normed, config=Config(), save=field.save_rounded, inputs=X, atol=1e-2,
                   outputs_atol=0)

@pytest.mark.ckpt_roundtrip("plain")
def test_rounding_with_its_own_tolerance(ckpt):
    ckpt.roundtrip(field.Normed, config=Config(), save=field.save_rounded, inputs=X, atol=1e-2,
                   outputs_atol=0.5)
'''


def test_failures_name_their_cause_and_the_code_at_fault(pytester):
    pytester.makepyfile(proj=ISSUE, field=FIELD, test_field=FIELD_TESTS)
    result = run(pytester)
    result.assert_outcomes(passed=5, failed=7)
    out = result.stdout.str()

    # the issue's example: the cause leads, says 4 vs 3 blocks and what the load must do
    issue = section(out, "test_issue_example[ckpt-plain]")
    assert [line for line in issue if line.startswith("E")][:5] == [
        "E       pytest_ckpt.errors.CheckpointMismatch: ckpt-plain round trip (saved with "
        "proj.save_checkpoint, loaded with proj.load_for_inference): [layer-count] blocks.3.*: "
        "1 block unexpected: the checkpoint has 4 blocks, your load built 3; num_layers: 4 -> 3",
        "E       your load raised at proj.py:12 in load_for_inference:",
        'E           m = Net(SERVE); m.load_state_dict(torch.load(path, weights_only=True)'
        '["model_state"]); return m',
        "E         RuntimeError: Error(s) in loading state_dict for Net:",
        'E           Unexpected key(s) in state_dict: "blocks.3.weight", "blocks.3.bias".',
    ]
    assert "E             fix: build the model in your load with num_layers=4, as training does" in issue
    assert len(issue) < 25 and "def load_state_dict" not in out  # torch's 100 lines of source: gone
    assert "FAILED test_field.py::test_issue_example[ckpt-plain]: [plain] [layer-count] blocks.3.*: " \
           "1 block unexpected: the checkpoint has 4 blocks, your load built 3; num_layers: 4 -> 3" in out

    # the file itself is wrong: the save must change, and the summary says so first
    result.stdout.fnmatch_lines([
        "FAILED test_field.py::test_save_drops_running_stats[[]ckpt-plain[]]: [[]plain[]] [[]missing[]] "
        "3 tensors missing from the checkpoint: norm.num_batches_tracked, norm.running_mean, "
        "norm.running_var",
        "FAILED test_field.py::test_save_leaves_orig_mod[[]ckpt-plain[]]: [[]plain[]] [[]prefix[]] every "
        "name in the checkpoint starts with _orig_mod. (torch.compile), though the model your save "
        "was given is not wrapped: your save adds it",
    ])
    stats = section(out, "test_save_drops_running_stats[ckpt-plain]")
    assert any("fix: your save must write them: save the whole model.state_dict()" in l for l in stats)
    assert any("and so your load raised at field.py:" in l for l in stats)

    # an inference-side cast is the load's doing; declared once with dtype=, it passes
    result.stdout.fnmatch_lines([
        "E       *[[]dtype[]] 12 tensors are float16 in the reloaded model, float32 in the saved model",
        "E       the reloaded model (Normed) differs from the saved model (Normed): 12 dtype (1 cause)",
        "*fix: your load casts them to float16 (.half(), .to(), a torch_dtype=): keep float32, or "
        "declare the cast once with ckpt.roundtrip(..., dtype=torch.float16)",
    ])
    assert "differs from model (Normed)" not in out and " checkpoint (Normed)" not in out
    result.stdout.fnmatch_lines([
        "*outputs: outputs not compared: the reloaded model is bfloat16, the saved model float32, "
        "and it raised on inputs= (RuntimeError: *); if your load casts on purpose, declare it "
        "with ckpt.roundtrip(..., dtype=torch.bfloat16)*"])

    # layers±1: a load that builds what the checkpoint says passes (within atol), saying so; one
    # that builds one depth whatever the checkpoint holds fails; a refusal by sizes is a refusal
    result.stdout.fnmatch_lines([
        "passed 1 x layers+1: your load built the 5 blocks the checkpoint holds (num_layers=5 saved, "
        "config says 4): it builds from the checkpoint's own config, and loads the 4-block checkpoint too",
        "passed 1 x layers-1: your load built the 3 blocks the checkpoint holds *",
    ])
    result.stdout.fnmatch_lines([
        "FAILED test_field.py::test_load_builds_one_depth[[]ckpt-layers-1[]]: [[]layers-1[]] [[]layer-count[]] "
        "your load builds 3 blocks whatever the checkpoint holds: it accepted one with one block "
        "fewer (num_layers=3 saved, config says 4)"])
    assert "test_refusal_by_sizes_only" not in out  # passed

    # outputs have their own tolerance; rounding within the weights' tolerance is named as such
    result.stdout.fnmatch_lines([
        "E       *: [[]outputs[]] output differs (max |Δ| *, atol=0, rtol=0)",
        "E       the weights match (ok: 13 tensors match within atol=0.01, rtol=0); the outputs do not:",
        "*fix: the weights differ within atol/rtol, the outputs by more: the rounding propagated "
        "through the model; give the outputs their own tolerance with outputs_atol=/outputs_rtol=",
    ])
    assert "non-persistent buffer" not in out
    result.stdout.fnmatch_lines(["12 round trips: 5 passed, 7 failed, 0 skipped"])


#: the README Quick Start's shape: a project's own torch.save and a load that strips wrappers
QUICK_START = '''
from dataclasses import dataclass
import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present


@dataclass
class Config:
    num_layers: int = 2
    dim: int = 8


class Net(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(cfg.dim, cfg.dim) for _ in range(cfg.num_layers))
        self.norm = nn.BatchNorm1d(cfg.dim)

    def forward(self, x):
        for block in self.blocks:
            x = torch.tanh(block(x))
        return self.norm(x)


def build_model(cfg):
    return Net(cfg)


def save_checkpoint(model, path):
    torch.save(model.state_dict(), path)


def load_for_inference(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    for prefix in ("_orig_mod.", "module.", "_orig_mod."):
        consume_prefix_in_state_dict_if_present(state, prefix)
    model = Net(Config())
    model.load_state_dict(state)
    return model.eval()


SEEN = {}


def save_training_state(model, path, *, config, optimizer):
    SEEN.update(config=config, optimizer=optimizer)
    torch.save({"config": vars(config), "model": model.state_dict(),
                "optimizer": optimizer.state_dict()}, path)


def load_training_state(path):
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    for prefix in ("_orig_mod.", "module.", "_orig_mod."):
        consume_prefix_in_state_dict_if_present(state, prefix)
    model = Net(Config())
    model.load_state_dict(state)
    return model.eval()


class Clip(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))  # 0-dim: FSDP2 cannot shard it
'''

QUICK_START_TESTS = '''
import pytest
import torch
import myproject
from myproject import Config, build_model, save_checkpoint, load_for_inference

@pytest.mark.ckpt_roundtrip()   # plain, DataParallel, DDP, compile, FSDP2, nested, safetensors...
def test_inference_loads_what_training_saves(ckpt):
    ckpt.roundtrip(build_model, config=Config(), save=save_checkpoint, load=load_for_inference)

@pytest.mark.ckpt_roundtrip("plain", "nested")
def test_save_gets_config_and_optimizer(ckpt):
    ckpt.roundtrip(build_model, config=Config(), save=myproject.save_training_state,
                   load=myproject.load_training_state)
    optimizer = myproject.SEEN["optimizer"]
    assert myproject.SEEN["config"] == Config()
    assert isinstance(optimizer, torch.optim.AdamW)
    assert all(s["step"] == 1 for s in optimizer.state_dict()["state"].values())

@pytest.mark.ckpt_roundtrip("fsdp")
def test_clip(ckpt):
    ckpt.roundtrip(myproject.Clip)
'''


def test_the_quick_start_marker_passes_on_a_correct_project_that_saves_with_torch_save(pytester):
    pytester.makepyfile(myproject=QUICK_START, test_quick_start=QUICK_START_TESTS)
    result = run(pytester, "-rs")
    result.assert_outcomes(passed=9, skipped=3)
    # under fsdp the torch.save runs on rank 0 with the state gathered from the ranks, as FSDP2 training does
    assert "torch file of DTensors" not in result.stdout.str()
    result.stdout.fnmatch_lines([
        "12 round trips: 9 passed, 0 failed, 3 skipped",
        "skipped 1 x fsdp: FSDP2 cannot shard this model: fully_shard doesn't support scalar "
        "parameters*logit_scale*",
        "skipped 1 x nested: your save writes its own layout and takes no optimizer=, so this "
        "would only repeat plain*",
        "skipped 1 x safetensors: your save wrote a torch file to model.safetensors, not "
        "safetensors: it picks its format by itself*",
    ])


USAGE_TESTS = '''
import pytest
import torch
from torch import nn

def build(config=None):
    return nn.Linear(2, 2)

def build_no_config():
    return nn.Linear(2, 2)

def build_broken(config):
    return nn.Linear(config.width, 2)

def save_path_only(path):
    pass

@pytest.mark.ckpt_roundtrip("plain")
def test_model_instance(ckpt):
    ckpt.roundtrip(nn.Linear(2, 2))

@pytest.mark.ckpt_roundtrip("plain")
def test_wrong_save(ckpt):
    ckpt.roundtrip(build, save=save_path_only)

@pytest.mark.ckpt_roundtrip("plain")
def test_config_for_no_config(ckpt):
    ckpt.roundtrip(build_no_config, config={"width": 2})

@pytest.mark.ckpt_roundtrip("plain")
def test_factory_raises(ckpt):
    ckpt.roundtrip(build_broken, config={"width": 2})
'''


def test_bad_usage_is_said_up_front_naming_the_argument(pytester):
    pytester.makepyfile(test_usage=USAGE_TESTS)
    result = run(pytester)
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines([
        "E   *TypeError: ckpt.roundtrip: the factory is a model instance (Linear), not a function "
        "that builds one; pass the class or a function*",
    ])
    result.stdout.fnmatch_lines([
        "E   *TypeError: ckpt.roundtrip: save=test_usage.save_path_only(path) must take (model, path) "
        "(and may take config= and optimizer=)",
    ])
    result.stdout.fnmatch_lines([
        "E   *TypeError: ckpt.roundtrip: config= was given, but the factory test_usage.build_no_config() "
        "cannot be called as factory(config); drop config= or let the factory take the config",
    ])
    result.stdout.fnmatch_lines([
        "E   *FactoryError: ckpt-plain: the factory test_usage.build_broken(config) raised "
        "AttributeError: 'dict' object has no attribute 'width'",
    ])

    # a report path that is a directory: refused before anything runs (in-process: no torch)
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--ckpt-report=.", "test_ok.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ckpt-report=.: is a directory; give a file path, "
                                 "e.g. --ckpt-report=ckpt-report.json"])
    assert "OSError" not in result.stderr.str() + result.stdout.str()

    # an unknown variation is one error, said once
    pytester.makepyfile(test_unknown=textwrap.dedent('''
        import pytest

        @pytest.mark.ckpt_roundtrip("plian")
        def test_x(ckpt):
            pass
    '''))
    result = pytester.runpytest("-p", "no:cacheprovider", "test_unknown.py")
    # (the short summary repeats the error's first line, cut to the terminal's width: not counted)
    said = [line for line in result.stdout.lines
            if re.search(r"unknown variation .plian.; valid", line) and not line.startswith("ERROR ")]
    assert len(said) == 1, result.stdout.str()
    assert "During handling of the above exception" not in result.stdout.str()
