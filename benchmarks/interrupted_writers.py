"""The writers the ``interrupted`` benchmark kills, and the training run ckpt-chaos kills.

Module-level functions (the variation's child imports them by name): a factory, the project's
save, the project's load. Run as a script, this is a two-step "training" that saves with one
writer after each step and resumes from what it finds (ckpt-chaos's command):

    python benchmarks/interrupted_writers.py WRITER OUT

It writes ``OUT/final.pt`` (the final weights) at the end; a resume identifies its step by the
weights it loaded, and a checkpoint of neither step is trained on as it is (silent divergence).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn


def tiny() -> nn.Module:
    """About ten tensors: a tiny model with a torch save."""
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


def tiny_llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(config)


# -- saves -------------------------------------------------------------------------------------

def save_in_place(model, path):
    torch.save(model.state_dict(), path)


def save_tmp_rename(model, path):
    torch.save(model.state_dict(), f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


def save_pc(model, path):
    import pytest_ckpt as pc

    pc.save(model, path)


def save_safetensors(model, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def save_pretrained_3_shards(model, path):
    model.save_pretrained(path, max_shard_size="12KB")  # 3 shards of tiny_llama


def save_dcp(model, path):
    import torch.distributed.checkpoint as dcp

    dcp.save(model.state_dict(), checkpoint_id=str(path))


def save_steps(model, path):
    """One file per step under ``path``, each written in place with torch.save."""
    path = Path(path)
    path.mkdir(exist_ok=True)
    step = 1 + max((int(m.group(1)) for p in path.iterdir()
                    if (m := re.fullmatch(r"step-(\d+)\.pt", p.name))), default=0)
    torch.save(model.state_dict(), path / f"step-{step}.pt")


# -- loads -------------------------------------------------------------------------------------

def load_torch(path):
    model = tiny()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model


def load_safetensors(path):
    from safetensors.torch import load_file

    model = tiny()
    model.load_state_dict(load_file(str(path)))
    return model


def load_pretrained(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)


def load_dcp(path):
    import torch.distributed.checkpoint as dcp

    model = tiny()
    state = model.state_dict()
    dcp.load(state, checkpoint_id=str(path))
    model.load_state_dict(state)
    return model


def load_latest(path):
    import pytest_ckpt as pc

    model = tiny()
    pc.load_into(model, pc.latest_complete(path).path)
    return model


@dataclass(frozen=True)
class Writer:
    label: str
    factory: Callable
    save: Callable
    load: Callable


WRITERS = {
    "torch-in-place": Writer("torch.save in place", tiny, save_in_place, load_torch),
    "tmp-rename": Writer("torch.save to .tmp + os.replace", tiny, save_tmp_rename, load_torch),
    "pc-save": Writer("pc.save", tiny, save_pc, load_torch),
    "safetensors": Writer("safetensors.torch.save_file in place", tiny, save_safetensors, load_safetensors),
    "save-pretrained": Writer("save_pretrained, 3 shards / from_pretrained", tiny_llama,
                              save_pretrained_3_shards, load_pretrained),
    "dcp": Writer("dcp.save / dcp.load", tiny, save_dcp, load_dcp),
    "steps-latest": Writer("torch.save in place, a file per step / pc.latest_complete", tiny,
                           save_steps, load_latest),
}


# -- the training run ckpt-chaos kills ---------------------------------------------------------

STEPS = 2


@torch.no_grad()
def advance(model: nn.Module, step: int) -> nn.Module:
    """One "training step": every floating tensor moves by a step-dependent amount."""
    for t in model.state_dict().values():
        if t.is_floating_point():
            t.add_(0.01 * step)
    return model


def _state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train(writer: Writer, out: Path) -> None:
    torch.manual_seed(0)
    states = [_state(writer.factory())]
    for step in range(1, STEPS + 1):  # the fault-free run's states, to recognise a resumed step
        model = writer.factory()
        model.load_state_dict(states[-1])
        states.append(_state(advance(model, step)))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.pt"
    model, start = writer.factory(), 0
    model.load_state_dict(states[0])
    if path.exists():  # resume: the project's load, whatever it raises
        model = writer.load(path)
        loaded = _state(model)
        start = next((s for s in range(STEPS, 0, -1) if _equal(loaded, states[s])), 1)
    for step in range(start + 1, STEPS + 1):
        advance(model, step)
        writer.save(model, path)
    tmp = out / "final.pt.tmp"
    torch.save(_state(model), tmp)
    os.replace(tmp, out / "final.pt")


if __name__ == "__main__":
    train(WRITERS[sys.argv[1]], Path(sys.argv[2]))
