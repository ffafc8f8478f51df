"""The model families the detection properties run over, and the ways a drifted state dict reaches disk.

Shared by the property tests and ``benchmarks/detection.py``. transformers
models are built from tiny config objects: nothing is downloaded.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

import pytest_ckpt as pc
from tests.tinymodel import TinyConfig, TinyLM

#: how a drifted state dict reaches ``pc.diff``: in memory, or a file written by each writer
ROUTES = ("dict", "torch.save", "safetensors", "pc.save.pt", "pc.save.safetensors")


@dataclass(frozen=True)
class Family:
    """A model family: a tiny base config, the model class, and fields that leave the schema alone."""

    name: str
    base: Any
    factory: Callable[[Any], torch.nn.Module]
    #: field -> values that change behaviour (dropout, kernels) but never a tensor
    equivalent: dict[str, tuple] = field(default_factory=dict)

    def build(self, cfg: Any, seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.factory(cfg).eval()

    def meta(self, cfg: Any) -> torch.nn.Module:
        with torch.device("meta"):
            return self.build(cfg)

    def __repr__(self) -> str:  # test ids and hypothesis output
        return self.name


def _tinylm() -> Family:
    return Family("tinylm", TinyConfig(num_hidden_layers=2, hidden_size=16, intermediate_size=32,
                                       vocab_size=32), TinyLM,
                  equivalent={"dropout": (0.0, 0.1, 0.5)})


def _transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return transformers


def _llama() -> Family:
    tf = _transformers()
    cfg = tf.LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                         max_position_embeddings=64)
    return Family("llama", cfg, tf.LlamaForCausalLM,
                  equivalent={"attention_dropout": (0.0, 0.1), "rms_norm_eps": (1e-6, 1e-5),
                              "attn_implementation": ("eager", "sdpa")})


def _qwen2() -> Family:
    tf = _transformers()
    cfg = tf.Qwen2Config(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                         max_position_embeddings=64)
    return Family("qwen2", cfg, tf.Qwen2ForCausalLM,
                  equivalent={"attention_dropout": (0.0, 0.1), "attn_implementation": ("eager", "sdpa")})


def _gpt2() -> Family:
    tf = _transformers()
    cfg = tf.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=32,
                        bos_token_id=0, eos_token_id=0)
    return Family("gpt2", cfg, tf.GPT2LMHeadModel,
                  equivalent={"resid_pdrop": (0.0, 0.1), "embd_pdrop": (0.0, 0.1),
                              "attn_pdrop": (0.0, 0.1), "layer_norm_epsilon": (1e-5, 1e-6),
                              "attn_implementation": ("eager", "sdpa")})


_FAMILIES = {"tinylm": _tinylm, "llama": _llama, "qwen2": _qwen2, "gpt2": _gpt2}
FAMILY_NAMES = tuple(_FAMILIES)


@functools.lru_cache(maxsize=None)
def family(name: str) -> Family:
    """The family called ``name`` (transformers imported on first use)."""
    return _FAMILIES[name]()


def with_fields(cfg: Any, **changes: Any) -> Any:
    """``cfg`` with ``changes``; ``attn_implementation`` goes through the constructor."""
    import dataclasses

    if "num_hidden_layers" in changes and getattr(cfg, "layer_types", None) is not None:
        changes.setdefault("layer_types", None)  # one per layer: let the config derive them
    if hasattr(cfg, "to_dict") and not dataclasses.is_dataclass(cfg) or "attn_implementation" in changes:
        return type(cfg)(**{**cfg.to_dict(), **changes})
    return dataclasses.replace(cfg, **changes)


def routes_for(kind: str) -> tuple[str, ...]:
    """The routes a drift of ``kind`` can take: pc.save canonicalizes names and finds
    nested weights itself, so prefix and nest reach it undone; safetensors holds no tree."""
    if kind == "nest":
        return ("dict", "torch.save")
    if kind == "prefix":
        return ("dict", "torch.save", "safetensors")
    return ROUTES


def write(route: str, obj: Any, folder: Path, config: Any = None) -> Any:
    """``obj`` (a state dict or training state) as ``pc.diff`` will read it along ``route``."""
    if route == "dict":
        return obj
    if route == "torch.save":
        path = folder / "ckpt.pt"
        torch.save(obj, path)
        return path
    if route == "safetensors":
        from safetensors.torch import save_file

        path = folder / "ckpt.safetensors"
        # save_file refuses shared and strided tensors: every tensor its own copy
        save_file({k: v.detach().contiguous().clone() for k, v in obj.items()}, str(path))
        return path
    suffix = route.rsplit(".", 1)[1]
    return pc.save(obj, folder / f"ckpt.{suffix}", config=config)
