"""A DTensor state dict written with torch.save (a plain save under FSDP2): one rank's shards.

The file comes from two real gloo ranks running FSDP2, once per module. Every library call
and the command line say the same thing, whatever the process imported: torch allows the
DTensor globals in weights-only loading only once ``torch.distributed.tensor`` is imported,
so before, the library (after a distributed run) said "ok" while the CLI said "unsafe".
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_ckpt as pc
from tests.tinymodel import TinyConfig, TinyLM

ROOT = Path(__file__).resolve().parents[2]
CAUSE = ("a state dict of DTensors written with torch.save: one rank's shards of a sharded model "
         "(under FSDP2, model.state_dict() holds only this rank's slice of each tensor; the other "
         "ranks' slices are not in this file); save with torch.distributed.checkpoint from every "
         "rank (dcp.save(model.state_dict(), checkpoint_id=DIR)), or gather the whole model first: "
         "get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, "
         "cpu_offload=True)), then torch.save on rank 0")


@pytest.fixture(scope="module")
def rank0_file(tmp_path_factory) -> Path:
    from pytest_ckpt.checks.variations.fsdp import FsdpJob, run_fsdp_save
    from pytest_ckpt.checks.variations.registry import VariationUnavailable

    out = tmp_path_factory.mktemp("dtensor")
    job = FsdpJob(factory=("tests.tinymodel", "TinyLM"),
                  config_blob=pickle.dumps(TinyConfig(num_hidden_layers=2)),
                  save=("tests.plugin.workers", "torch_save_state_dict"), seed=0,
                  checkpoint_dir=str(out / "ckpt"), full_state_path=str(out / "full.pt"))
    try:
        run_fsdp_save(job, out / "ranks")  # the ranks are killed on failure and timeout too
    except VariationUnavailable as exc:
        pytest.skip(f"two FSDP2 ranks cannot run here: {exc}")
    return out / "ckpt" / "rank0.pt"


def test_every_library_call_says_one_ranks_shards_and_what_to_save(rank0_file):
    import torch.distributed.tensor  # noqa: F401  (the state a process is in after FSDP2 work)

    calls = {
        "verify": lambda: pc.verify(rank0_file),
        "schema": lambda: pc.schema(rank0_file),
        "inspect": lambda: pc.inspect(rank0_file),
        "load_state_dict": lambda: pc.load_state_dict(rank0_file),
        "trusted load": lambda: pc.load_state_dict(rank0_file, weights_only=False),
        "diff": lambda: pc.diff(TinyLM(TinyConfig(num_hidden_layers=2)), rank0_file),
        "load_into": lambda: pc.load_into(TinyLM(TinyConfig(num_hidden_layers=2)), rank0_file),
    }
    for what, call in calls.items():
        with pytest.raises(pc.CheckpointError) as info:
            call()
        assert (info.value.kind, info.value.cause) == ("incomplete", CAUSE), what
        assert info.value.path == str(rank0_file)


def test_the_command_line_agrees_from_a_fresh_process(rank0_file):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pytest_ckpt.cli", "verify", "--json", str(rank0_file)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    payload = json.loads(proc.stdout)
    assert (payload["kind"], payload["path"]) == ("incomplete", str(rank0_file))
    assert payload["message"] == f"{rank0_file}: incomplete: {CAUSE}"


def test_the_gathered_full_state_dict_is_the_fix(rank0_file):
    # what the ranks also wrote, as the message says: get_model_state_dict(full_state_dict=True)
    full = rank0_file.parent.parent / "full.pt"
    pc.verify(full)
    model = TinyLM(TinyConfig(num_hidden_layers=2))
    assert pc.load_into(model, full).ok
