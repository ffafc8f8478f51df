"""Shared by the plugin tests: a small real project (config, model, save and load functions).

``pytest_plugins = ["pytester"]`` lives in each test module: pytest refuses it
in a conftest below the rootdir.
"""

from __future__ import annotations

import textwrap

import pytest

#: what a real project looks like: a config dataclass, numbered blocks, a tied embedding,
#: its training-side save and its inference-side loads (good and drifted ones)
PROJECT = textwrap.dedent(
    '''
    import dataclasses
    import os
    from dataclasses import dataclass

    import torch
    from torch import nn

    import pytest_ckpt as pc


    @dataclass
    class Config:
        num_layers: int = 3
        hidden: int = 8
        vocab: int = 16


    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.norm = nn.LayerNorm(c.hidden)
            self.fc = nn.Linear(c.hidden, c.hidden)

        def forward(self, x):
            return x + self.fc(self.norm(x))


    class Model(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.embed = nn.Embedding(c.vocab, c.hidden)
            self.blocks = nn.ModuleList(Block(c) for _ in range(c.num_layers))
            self.head = nn.Linear(c.hidden, c.vocab, bias=False)
            self.head.weight = self.embed.weight  # tied

        def forward(self, ids):
            x = self.embed(ids)
            for block in self.blocks:
                x = block(x)
            return self.head(x)


    def build(config):
        torch.manual_seed(0)  # seeded, as real factories often are
        return Model(config)


    INPUTS = torch.arange(6).view(1, 6)


    def load_good(path):
        model = build(Config())
        pc.load_into(model, path)
        return model


    def load_fewer(path):
        """Drifted inference code: builds one layer fewer than training."""
        model = build(dataclasses.replace(Config(), num_layers=Config().num_layers - 1))
        pc.load_into(model, path)
        return model


    def load_fresh(path):
        """Silently ignores the checkpoint."""
        return build(Config())


    def load_strict_torch(path):
        model = build(Config())
        model.load_state_dict(torch.load(path, weights_only=True))
        return model


    def load_lenient_torch(path):
        model = build(Config())
        model.load_state_dict(torch.load(path, weights_only=True), strict=False)
        return model


    def save_logged(model, path, optimizer=None):
        """The project's training-side save; logs what it was handed (with a real optimizer)."""
        state = model.state_dict()
        with open(os.environ["SAVE_LOG"], "a") as log:
            log.write(f"{type(model).__name__} {next(iter(state))} {type(optimizer).__name__}\\n")
        if str(path).endswith(".safetensors"):
            pc.save(model, path)
        elif not os.path.splitext(str(path))[1]:
            import torch.distributed.checkpoint as dcp

            dcp.save(state, checkpoint_id=str(path))
        else:
            torch.save(state, path)
    '''
)


@pytest.fixture
def project(pytester):
    """A pytester directory holding ``project.py``; returns the pytester."""
    pytester.makepyfile(project=PROJECT)
    return pytester
