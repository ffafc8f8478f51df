"""Train a few steps and save, the way real training scripts do.

The model is wrapped in DistributedDataParallel (a one-process gloo group, so
it runs on any laptop) and compiled; the checkpoint is a nested training state
saved from the *wrapper*, so its weight names carry ``_orig_mod.module.``:

    {"epoch", "step", "config", "trainer": {"var_wo_ddp": weights, "var_opt": optimizer}}

``export_for_serving`` writes the Hugging Face sharded safetensors layout
(``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json``).

    python -m tinyllm.train --out runs/last.ckpt --steps 20
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .config import LMConfig
from .model import TinyLLM, build

INDEX_NAME = "model.safetensors.index.json"


@contextlib.contextmanager
def process_group():
    """A one-process gloo group (what ``torchrun --nproc-per-node 1`` gives), unless one exists."""
    if dist.is_initialized():
        yield
        return
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def batches(cfg: LMConfig, steps: int, batch_size: int = 8):
    """A toy corpus: counting modulo the vocabulary, so the loss visibly falls."""
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        start = torch.randint(0, cfg.vocab_size, (batch_size, 1), generator=g)
        seq = (start + torch.arange(cfg.block_size + 1)) % cfg.vocab_size
        yield seq[:, :-1], seq[:, 1:]


def unwrap(model: nn.Module) -> nn.Module:
    while isinstance(getattr(model, "_orig_mod", None), nn.Module) or isinstance(model, DistributedDataParallel):
        model = getattr(model, "_orig_mod", None) or model.module
    return model


def save_checkpoint(model: nn.Module, path, *, optimizer=None, epoch: int = 0, step: int = 0) -> Path:
    """The training-side save: the whole training state, written atomically."""
    path = Path(path)
    config = getattr(unwrap(model), "config", None)
    state = {
        "epoch": epoch,
        "step": step,
        "config": dataclasses.asdict(config) if config is not None else None,
        "trainer": {
            # Named for the unwrapped model, but saved from the wrapper, as so much real code does.
            "var_wo_ddp": model.state_dict(),
            "var_opt": optimizer.state_dict() if optimizer is not None else {},
        },
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def write_shard(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, str(path), metadata={"format": "pt"})


def export_for_serving(model: nn.Module, directory, *, max_shard_bytes: int = 32_000) -> Path:
    """Sharded safetensors, Hugging Face layout; the tied ``lm_head.weight`` is stored once (as ``wte``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in unwrap(model).state_dict().items() if k != "lm_head.weight"}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    # The index goes first, so the serving side can start fetching shards while we write them.
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": {k: names[i] for i, shard in enumerate(shards) for k in shard}}
    (directory / INDEX_NAME).write_text(json.dumps(index, indent=2))
    for shard, name in zip(shards, names):
        write_shard(shard, directory / name)
    return directory


def train(cfg: LMConfig, steps: int, out, *, compile_backend: str = "eager", lr: float = 1e-2) -> tuple[Path, float]:
    """Train ``steps`` steps under DDP + torch.compile; save the training state to ``out``."""
    with process_group():
        model: TinyLLM = build(cfg)
        # inductor is what production uses; "eager" traces with dynamo but skips codegen (fast on CPU)
        wrapped = torch.compile(DistributedDataParallel(model), backend=compile_backend)
        optimizer = torch.optim.AdamW(wrapped.parameters(), lr=lr)
        loss = torch.tensor(float("nan"))
        for step, (x, y) in enumerate(batches(cfg, steps), start=1):
            logits = wrapped(x)
            loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), y.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        path = save_checkpoint(wrapped, out, optimizer=optimizer, epoch=1, step=steps)
    return path, loss.item()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/last.ckpt")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--compile-backend", default="eager")
    parser.add_argument("--export", default=None, help="also write the sharded serving export here")
    args = parser.parse_args(argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    path, loss = train(LMConfig(), args.steps, args.out, compile_backend=args.compile_backend)
    print(f"trained {args.steps} steps (DDP, torch.compile), loss {loss:.3f}; saved {path}")
    if args.export:
        from .infer import load_model

        print(f"exported {export_for_serving(load_model(path), args.export)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
