"""The model's config: one dataclass, shared by training and serving."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LMConfig:
    vocab_size: int = 32
    block_size: int = 16
    n_layer: int = 4
    n_head: int = 2
    n_embd: int = 16


def serving_config() -> LMConfig:
    """The config the inference service builds its model from (a deploy-time file in real life)."""
    return LMConfig()
