"""What training saves is what inference loads: tinyllm's checkpoint tests, with pytest-ckpt."""

import json
from pathlib import Path

import pytest
import torch

import pytest_ckpt as pc
from tinyllm import infer, train
from tinyllm.config import LMConfig
from tinyllm.model import build

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RELEASE = FIXTURES / "tinyllm-v0.1.ckpt"  # what release 0.1's training run saved
SAMPLE = torch.tensor([[3, 4, 5, 6, 7]])


# Round trips: train.py's save (under each wrapper) -> infer.py's load, every tensor and the
# outputs compared exactly. The plugin runs the test once per variation.
@pytest.mark.ckpt_roundtrip("plain", "ddp", "compile", "ddp+compile", "compile+ddp", "nested")
def test_inference_loads_what_training_saves(ckpt):
    ckpt.roundtrip(build, config=LMConfig(), save=train.save_checkpoint, load=infer.load_model,
                   inputs=SAMPLE)


# A checkpoint one block shorter or longer than the serving config must be refused, loudly.
@pytest.mark.ckpt_roundtrip("layers-1", "layers+1")
def test_inference_refuses_a_different_depth(ckpt):
    ckpt.roundtrip(build, config=LMConfig(), save=train.save_checkpoint, load=infer.load_model)


# A job killed while train.py saves (at every file boundary of the save, and with its file torn)
# must leave a checkpoint inference loads whole: the previous one or the new one.
@pytest.mark.ckpt_roundtrip("interrupted")
def test_a_killed_save_leaves_a_whole_checkpoint(ckpt):
    ckpt.roundtrip(build, config=LMConfig(), save=train.save_checkpoint, load=infer.load_model)


# Training stopped after step 3 and resumed from its checkpoint must be the training that never
# stopped: weights, AdamW state, the warm-up's position, the data position, the step count. Run as
# is, under torch.compile, under DDP, and resumed in a fresh process.
@pytest.mark.ckpt_resume()
def test_training_resumes_exactly(ckpt):
    ckpt.resume(train.start, train.step, save=train.save, load=train.load, config=LMConfig())


# The real training script, end to end (DDP over a 1-process gloo group, torch.compile, AdamW).
def test_training_run_loads_for_inference(tmp_path, ckpt_snapshot):
    path, _ = train.train(LMConfig(), steps=2, out=tmp_path / "last.ckpt")
    ckpt_snapshot.assert_match(path)  # the saved weights' names, shapes, dtypes: golden file
    pc.assert_same(infer.load_model(path), path)


# The serving model's architecture, pinned: a change shows up in review as a golden-file diff.
def test_serving_model_schema(ckpt_snapshot):
    ckpt_snapshot.assert_match(infer.build_model())


# Checkpoints users already have must keep loading and generating the same text.
def test_release_checkpoint_still_loads():
    expected = json.loads(RELEASE.with_suffix(".json").read_text())
    model = infer.load_model(RELEASE)
    pc.assert_same(model, RELEASE)
    assert infer.generate(model, expected["prompt"], 8) == expected["generated"]


# The sharded safetensors export for serving: complete, and exactly the trained weights.
def test_serving_export_is_complete(tmp_path):
    model = infer.load_model(RELEASE)
    directory = train.export_for_serving(model, tmp_path / "serving")
    pc.verify(directory)
    pc.assert_same(model, directory)
    pc.assert_same(model, infer.load_exported(directory))
