"""A project's own transformers config, as minimind writes it: a PretrainedConfig subclass whose
fields are set in ``__init__``. Under transformers 5 it is a dataclass whose declared fields are
only the base class's: reading those alone loses num_hidden_layers and rope_theta."""

from __future__ import annotations

import torch
import transformers
from torch import nn


class MiniMindConfig(transformers.PretrainedConfig):
    model_type = "minimind-test"

    def __init__(self, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                 vocab_size=64, rope_theta=1e6, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.vocab_size = vocab_size
        self.rope_theta = rope_theta


class MiniMind(nn.Module):
    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(nn.Linear(config.hidden_size, config.hidden_size)
                                    for _ in range(config.num_hidden_layers))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.embed_tokens.weight = self.lm_head.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = x + layer(x)
        return self.lm_head(x)
