"""Training loops for ``benchmarks/resume_reshard.py``: tiny GPT-2 and Llama (tied and untied heads),
a model with odd sizes, and one with a 0-dim parameter; each trains on a global batch of 6 samples
split among the ranks, its data position stored as the samples consumed by all ranks (``lm_step_per_rank``: as
the samples this rank's own sampler yielded, which names other samples on another world size)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

GLOBAL_BATCH = 6
TOKENS = torch.randint(0, 96, (96, 8), generator=torch.Generator().manual_seed(0))
FEATURES = torch.randn(96, 5, generator=torch.Generator().manual_seed(0))


@dataclass
class Run:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    offset: int = 0
    yielded: int = 0  # what this rank's own sampler yielded: the per-rank position that does not reshard


def _run(model):
    return Run(model, torch.optim.AdamW(model.parameters(), lr=0.01))


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return _run(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=96, n_positions=16,
                                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)))


def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return _run(LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=1, vocab_size=96,
                                             max_position_embeddings=16, tie_word_embeddings=True)))


class Odd(nn.Module):
    """Rows that no world size divides evenly (7, 11, 5), a buffer, a tied pair."""

    def __init__(self, scalar: bool = False):
        super().__init__()
        self.embed = nn.Linear(5, 7)
        self.blocks = nn.ModuleList([nn.Linear(7, 11), nn.Linear(11, 7)])
        self.head = nn.Linear(7, 5, bias=False)
        self.skip = nn.Linear(5, 7, bias=False)
        self.skip.weight = self.embed.weight  # tied: one parameter, two modules
        self.register_buffer("scale", torch.tensor(0.5))
        if scalar:
            self.temperature = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        h = self.embed(x) + self.skip(x)
        for block in self.blocks:
            h = torch.relu(block(h))
        out = self.head(h) * self.scale
        return out * self.temperature if hasattr(self, "temperature") else out


def odd():
    return _run(Odd())


def odd_scalar():
    return _run(Odd(scalar=True))


def _part(run):
    world, rank = dist.get_world_size(), dist.get_rank()
    index = torch.arange(run.offset + rank, run.offset + GLOBAL_BATCH, world)
    run.offset += GLOBAL_BATCH
    return index


def _update(run, loss):
    run.optimizer.zero_grad()
    loss.backward()
    run.optimizer.step()
    return loss.detach()


def lm_step(run):
    ids = TOKENS[_part(run)]
    return _update(run, run.model(input_ids=ids, labels=ids).loss), ids


def lm_step_per_rank(run):
    world, rank = dist.get_world_size(), dist.get_rank()
    index = rank + world * torch.arange(run.yielded, run.yielded + GLOBAL_BATCH // world)
    run.yielded += len(index)
    ids = TOKENS[index]
    return _update(run, run.model(input_ids=ids, labels=ids).loss), ids


def odd_step(run):
    x = FEATURES[_part(run)]
    return _update(run, F.mse_loss(run.model(x), x.flip(1))), x


def _state(run):
    model, optimizer = get_state_dict(run.model, run.optimizer)
    return {"model": model, "optimizer": optimizer, "offset": run.offset, "yielded": run.yielded}


def save(run, path):
    dcp.save(_state(run), checkpoint_id=path)


def load(run, path):
    held = _state(run)
    dcp.load(held, checkpoint_id=path)
    set_state_dict(run.model, run.optimizer, model_state_dict=held["model"], optim_state_dict=held["optimizer"])
    run.offset, run.yielded = held["offset"], held["yielded"]
