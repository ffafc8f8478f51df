"""Load for inference, the way inference code is written: plain torch, by hand.

    python -m tinyllm.infer runs/last.ckpt --prompt 3 4 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from . import config as config_module
from .config import LMConfig
from .model import TinyLLM
from .train import INDEX_NAME

WRAPPER_PREFIXES = ("_orig_mod.", "module.", "_orig_mod.")  # compile(DDP(m)) and DDP(compile(m))


def extract_weights(checkpoint: dict) -> dict:
    """The weights inside what training saved: a training state, or a bare state dict."""
    if "trainer" in checkpoint:
        return checkpoint["trainer"]["var_wo_ddp"]
    return checkpoint


def strip_wrappers(state: dict) -> dict:
    """Remove DDP's ``module.`` and torch.compile's ``_orig_mod.`` (each only when every key has it)."""
    for prefix in WRAPPER_PREFIXES:
        consume_prefix_in_state_dict_if_present(state, prefix)
    return state


def load_weights(model: nn.Module, state: dict) -> None:
    model.load_state_dict(state)


def read_weights(path) -> dict:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return strip_wrappers(dict(extract_weights(checkpoint)))


def build_model(cfg: LMConfig | None = None) -> TinyLLM:
    return TinyLLM(cfg or config_module.serving_config())


def load_model(path, cfg: LMConfig | None = None) -> TinyLLM:
    """The serving model with the weights at ``path`` (a training checkpoint)."""
    model = build_model(cfg)
    load_weights(model, read_weights(path))
    return model.eval()


def load_exported(directory, cfg: LMConfig | None = None) -> TinyLLM:
    """The serving model from a sharded safetensors export."""
    directory = Path(directory)
    index = json.loads((directory / INDEX_NAME).read_text())
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        state.update(load_file(str(directory / shard)))
    state["lm_head.weight"] = state["wte.weight"]  # stored once: the head is tied
    model = build_model(cfg)
    load_weights(model, state)
    return model.eval()


@torch.no_grad()
def generate(model: TinyLLM, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy decoding."""
    ids = torch.tensor([prompt])
    for _ in range(new_tokens):
        logits = model(ids[:, -model.config.block_size:])
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0].tolist()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--prompt", type=int, nargs="+", default=[3, 4, 5])
    parser.add_argument("--new-tokens", type=int, default=8)
    args = parser.parse_args(argv)
    model = load_model(args.checkpoint)
    print(" ".join(map(str, generate(model, args.prompt, args.new_tokens))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
