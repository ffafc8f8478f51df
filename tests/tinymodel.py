"""The project's own test model: numbered blocks, tied embeddings, a config dataclass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TinyConfig:
    num_hidden_layers: int = 4
    hidden_size: int = 16
    intermediate_size: int = 32
    vocab_size: int = 32
    dropout: float = 0.0


class MLP(nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


class Block(nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.hidden_size)
        self.attn = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.mlp = MLP(cfg)

    def forward(self, x):
        h = x + self.attn(self.norm(x))
        return h + self.mlp(h)


class TinyLM(nn.Module):
    def __init__(self, cfg: TinyConfig | None = None):
        super().__init__()
        cfg = cfg or TinyConfig()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = nn.LayerNorm(cfg.hidden_size)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight  # tied, as in GPT-2

    def forward(self, ids):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


def tiny(layers: int = 4, seed: int = 0, **kw) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM(TinyConfig(num_hidden_layers=layers, **kw))
