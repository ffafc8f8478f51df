"""Checkpoints from an earlier release, committed under fixtures/, must keep loading.

The pattern for users: keep one small real checkpoint per release and test that
today's model still loads it strictly, and that its schema still matches the
golden snapshot (``pytest --ckpt-update`` only when the change is intended).
"""

from pathlib import Path

import pytest
import torch

import pytest_ckpt as pc
from tests.tinymodel import TinyConfig, TinyLM

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RELEASES = sorted(FIXTURES.glob("tinylm-v*.*"))


def test_release_fixtures_exist():
    assert {p.suffix for p in RELEASES} == {".pt", ".safetensors"}


@pytest.mark.parametrize("path", RELEASES, ids=lambda p: p.name)
def test_earlier_release_checkpoint_still_loads(path):
    pc.verify(path)
    config = TinyConfig(num_hidden_layers=2)
    model = TinyLM(config)
    report = pc.load_into(model, path, config=config)  # strict: any drift raises with the report
    assert report.diff.ok
    assert model.lm_head.weight is model.embed.weight
    assert not torch.isnan(model(torch.arange(4).view(1, 4))).any()


@pytest.mark.parametrize("path", RELEASES, ids=lambda p: p.name)
def test_earlier_release_schema_matches_its_snapshot(ckpt_snapshot, path):
    ckpt_snapshot.assert_match(path)


def test_the_current_model_matches_the_release_schema(ckpt_snapshot):
    ckpt_snapshot.assert_match(TinyLM(TinyConfig(num_hidden_layers=2)), name="model")
