"""Train a few steps and save, the way real training scripts do.

A run (:class:`TrainRun`: the model, AdamW, a warm-up schedule, the corpus's
position, the step) is built by ``start``, trained by ``step``, checkpointed by
``save`` and resumed by ``load``. The script wraps the model in
DistributedDataParallel (a one-process gloo group, so it runs on any laptop) and
compiles it; the checkpoint is a nested training state saved from the
*wrapper*, so its weight names carry ``_orig_mod.module.``:

    {"epoch", "step", "config",
     "trainer": {"var_wo_ddp": weights, "var_opt": optimizer, "var_sched": schedule, "var_data": data position}}

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
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present
from torch.nn.parallel import DistributedDataParallel

from .config import LMConfig
from .model import build

INDEX_NAME = "model.safetensors.index.json"
#: the learning rate after the warm-up, and the warm-up's length in steps
LR = 1e-2
WARMUP_STEPS = 4
#: what DDP and torch.compile put before the model's own names, in either order
WRAPPER_PREFIXES = ("_orig_mod.", "module.", "_orig_mod.")


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


class Corpus:
    """A toy corpus: counting modulo the vocabulary, so the loss visibly falls.

    An endless iterator of ``(inputs, targets)`` batches, drawn from its own generator; its
    position (that generator's state, the batches served) is resumable, as a real loader's must be.
    """

    def __init__(self, cfg: LMConfig, batch_size: int = 8, seed: int = 1) -> None:
        self.cfg, self.batch_size = cfg, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.served = 0

    def __iter__(self) -> "Corpus":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        start = torch.randint(0, self.cfg.vocab_size, (self.batch_size, 1), generator=self.generator)
        seq = (start + torch.arange(self.cfg.block_size + 1)) % self.cfg.vocab_size
        self.served += 1
        return seq[:, :-1], seq[:, 1:]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "served": self.served}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.served = state["served"]


def warmup(step: int) -> float:
    """The learning rate's factor: a linear warm-up over the first ``WARMUP_STEPS`` steps."""
    return min(1.0, (step + 1) / WARMUP_STEPS)


@dataclasses.dataclass
class TrainRun:
    """What a training job holds between steps: a checkpoint must carry all of it across a restart."""

    model: nn.Module  # wrapped for training (DDP, torch.compile) or not
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    data: Corpus
    step: int = 0


def start(cfg: LMConfig, *, lr: float = LR) -> TrainRun:
    """A fresh training run: the model, AdamW, the warm-up schedule, the corpus at its start."""
    model = build(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup)
    return TrainRun(model, optimizer, scheduler, Corpus(cfg))


def step(run: TrainRun) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step; returns the loss and the batch it trained on."""
    x, y = next(run.data)
    logits = run.model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.scheduler.step()
    run.step += 1
    return loss.detach(), x


def unwrap(model: nn.Module) -> nn.Module:
    while isinstance(getattr(model, "_orig_mod", None), nn.Module) or isinstance(model, DistributedDataParallel):
        model = getattr(model, "_orig_mod", None) or model.module
    return model


def training_state(model: nn.Module, *, optimizer=None, scheduler=None, data=None, epoch: int = 0,
                   step: int = 0) -> dict:
    """What a checkpoint holds: the whole training state, weights nested inside."""
    config = getattr(unwrap(model), "config", None)
    trainer = {
        # Named for the unwrapped model, but saved from the wrapper, as so much real code does.
        "var_wo_ddp": model.state_dict(),
        "var_opt": optimizer.state_dict() if optimizer is not None else {},
    }
    if scheduler is not None:
        trainer["var_sched"] = scheduler.state_dict()
    if data is not None:
        trainer["var_data"] = data.state_dict()
    return {"epoch": epoch, "step": step, "config": dataclasses.asdict(config) if config is not None else None,
            "trainer": trainer}


def save_checkpoint(model: nn.Module, path, *, optimizer=None, scheduler=None, data=None, epoch: int = 0,
                    step: int = 0) -> Path:
    """The training-side save: the whole training state, written atomically."""
    path = Path(path)
    state = training_state(model, optimizer=optimizer, scheduler=scheduler, data=data, epoch=epoch, step=step)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def save(run: TrainRun, path) -> Path:
    """The checkpoint a run writes to resume from: model, optimizer, schedule, data position, step."""
    return save_checkpoint(run.model, path, optimizer=run.optimizer, scheduler=run.scheduler, data=run.data,
                           step=run.step)


def load(run: TrainRun, path) -> None:
    """Resume: restore a checkpoint written by :func:`save` into a freshly started run."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    trainer = checkpoint["trainer"]
    weights = dict(trainer["var_wo_ddp"])
    for prefix in WRAPPER_PREFIXES:  # saved from the wrapper: read back into the model inside it
        consume_prefix_in_state_dict_if_present(weights, prefix)
    unwrap(run.model).load_state_dict(weights)
    run.optimizer.load_state_dict(trainer["var_opt"])
    if "var_sched" in trainer:  # checkpoints from before the warm-up carry none
        run.scheduler.load_state_dict(trainer["var_sched"])
    run.data.load_state_dict(trainer["var_data"])
    run.step = checkpoint["step"]


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


def train(cfg: LMConfig, steps: int, out, *, compile_backend: str = "eager", lr: float = LR) -> tuple[Path, float]:
    """Train ``steps`` steps under DDP + torch.compile; save the training state to ``out``."""
    with process_group():
        run = start(cfg, lr=lr)
        # inductor is what production uses; "eager" traces with dynamo but skips codegen (fast on CPU)
        run.model = torch.compile(DistributedDataParallel(run.model), backend=compile_backend)
        loss = torch.tensor(float("nan"))
        for _ in range(steps):
            loss, _ = step(run)
        path = save(run, out)
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
