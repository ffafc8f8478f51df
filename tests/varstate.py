"""A VAR-like training state: the trained model beside a larger frozen one, as VAR's trainer saves.

``{"epoch", "iter", "trainer": {"var_wo_ddp": <VAR>, "vae_local": <VAE, frozen>, "var_opt": ...}}``:
the VAE has more tensors than the model being trained, so "the largest mapping" is the wrong one.
"""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.attn = nn.Linear(dim, dim)
        self.ffn = nn.Linear(dim, dim)


class VAR(nn.Module):
    def __init__(self, depth: int = 2, dim: int = 8):
        super().__init__()
        self.word_embed = nn.Linear(4, dim)
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.head = nn.Linear(dim, 16)


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.ModuleList(nn.Conv2d(2, 2, 1) for _ in range(8))
        self.decoder = nn.ModuleList(nn.Sequential(nn.Conv2d(2, 2, 1), nn.GroupNorm(1, 2))
                                     for _ in range(6))
        self.quantize = nn.Embedding(16, 2)


def training_state(depth: int = 2) -> dict:
    torch.manual_seed(0)
    vae = VAE().requires_grad_(False)
    var = VAR(depth)
    opt = torch.optim.AdamW(var.parameters())
    var.head(torch.relu(var.word_embed(torch.ones(1, 4)))).sum().backward()
    opt.step()
    return {"epoch": 3, "iter": 120,
            "trainer": {"var_wo_ddp": var.state_dict(), "vae_local": vae.state_dict(),
                        "var_opt": opt.state_dict()},
            "rng": {"torch": torch.get_rng_state()}}


def save(path, depth: int = 2):
    torch.save(training_state(depth), path)
    return path
