"""Small state dicts shaped like a transformer, for the compare tests."""

import zlib

import torch

from pytest_ckpt.checkpoint.view import View


def state(blocks=8, hidden=8, dtype=torch.float32, seed=0):
    """A state dict; a name's values depend only on the name, seed and shape."""
    shapes = {"model.embed.weight": (10, hidden)}
    for i in range(blocks):
        shapes[f"model.layers.{i}.attn.q.weight"] = (hidden, hidden)
        shapes[f"model.layers.{i}.mlp.up.weight"] = (4 * hidden, hidden)
        shapes[f"model.layers.{i}.norm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (10, hidden)
    out = {}
    for name, shape in shapes.items():
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()) + seed)
        out[name] = torch.randn(*shape, generator=g).to(dtype)
    return out


def model(sd, **kw):
    return View.of_tensors("model", sd, **kw)


def ckpt(sd, **kw):
    return View.of_tensors("checkpoint", sd, **kw)
