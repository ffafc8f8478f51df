"""Tiny training loops shaped like real projects' resume code (issue 26), each with its own bugs.

Module-level functions (so the fresh-process variation can import them); the config carries the bug.
The shapes are those of the projects' own scripts, cut down to a few tensors:

- ``minimind``: ``trainer/train_pretrain.py``. The resume file holds the step; ``load`` builds a new
  DataLoader whose ``SkipBatchSampler`` skips the batches already done. The weights are saved as
  ``.half()`` (``half=True``), the step may be forgotten or restored off by one.
- ``nanogpt``: ``train.py``. ``get_batch`` draws from torch's global RNG, the next batch is fetched into
  the run before the backward, the checkpoint holds no RNG state, ``load`` rebuilds the model from
  ``model_args``. With ``from_iter=True`` the batches are a function of ``iter_num`` (a fork that made
  the data resumable without RNG state), and ``iter_num`` may be forgotten.
- ``stateful``: a resumable loader (``state_dict()`` holds the epoch start's generator state and the
  batches done, as torchdata's does); ``load`` may leave it as start built it, or lose the position.
- ``prestep``: a rollback copy of the model taken at the start of each step, which the save writes
  by mistake (the weights saved before the last optimizer step).
"""

from __future__ import annotations

import copy
import math
import os
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

VOCAB, BLOCK, WIDTH, N, BATCH = 16, 8, 8, 24, 4


class TinyLM(torch.nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, WIDTH)
        self.drop = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(WIDTH, VOCAB)

    def forward(self, x, y=None):
        logits = self.head(self.drop(self.emb(x)))
        loss = None if y is None else F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        return logits, loss


def tokens(n: int = N) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, BLOCK + 1), generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- #
# minimind: trainer/train_pretrain.py, trainer/trainer_utils.py
# --------------------------------------------------------------------------- #
class PretrainDataset(Dataset):
    def __init__(self) -> None:
        self.samples = tokens()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        t = self.samples[i]
        return t[:-1], t[1:]


class SkipBatchSampler(Sampler):
    """minimind's own (trainer_utils.py): batches of the sampler's indices, the first ``skip_batches`` left out."""

    def __init__(self, sampler, batch_size, skip_batches=0):
        self.sampler = sampler
        self.batch_size = batch_size
        self.skip_batches = skip_batches

    def __iter__(self):
        batch = []
        skipped = 0
        for idx in self.sampler:
            batch.append(idx)
            if len(batch) == self.batch_size:
                if skipped < self.skip_batches:
                    skipped += 1
                    batch = []
                    continue
                yield batch
                batch = []
        if len(batch) > 0 and skipped >= self.skip_batches:
            yield batch

    def __len__(self):
        total_batches = (len(self.sampler) + self.batch_size - 1) // self.batch_size
        return max(0, total_batches - self.skip_batches)


@dataclass(frozen=True)
class MiniMindArgs:
    batch_size: int = BATCH
    learning_rate: float = 5e-3
    epochs: int = 2
    grad_clip: float = 1.0
    hidden_size: int = WIDTH
    half: bool = False  # minimind's own save: {k: v.half() ...}
    load_bf16: bool = False  # a load that rounds the weights through bfloat16
    forget_step: bool = False
    step_off_by_one: bool = False
    hold_loader: bool = False  # the run holds the DataLoader (and so its SkipBatchSampler) beside the iterator
    forget_skip: bool = False  # the step is restored, the loader built again without skipping the batches done
    return_batch: bool = True


def setup_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_lr(current_step, total_steps, lr):
    return lr * (0.1 + 0.45 * (1 + math.cos(math.pi * current_step / total_steps)))


def minimind_loader(run: dict, epoch: int, skip: int) -> None:
    """The epoch's loader, as train_pretrain.py builds it (``skip``: the batches done before a resume)."""
    setup_seed(42 + epoch)
    indices = torch.randperm(len(run["ds"])).tolist()
    loader = DataLoader(run["ds"], batch_sampler=SkipBatchSampler(indices, run["args"].batch_size, skip))
    if run["args"].hold_loader:
        run["loader"] = loader
    run["it"] = iter(loader)


def minimind_start(args: MiniMindArgs = MiniMindArgs()) -> dict:
    setup_seed(42)
    model = TinyLM()
    run = {"args": args, "model": model, "optimizer": torch.optim.AdamW(model.parameters(), lr=args.learning_rate),
           "scaler": torch.amp.GradScaler("cpu", enabled=False), "ds": PretrainDataset(), "epoch": 0, "step": 0}
    minimind_loader(run, 0, 0)
    return run


def minimind_step(run: dict):
    args, model, optimizer, scaler = run["args"], run["model"], run["optimizer"], run["scaler"]
    iters = len(run["ds"]) // args.batch_size
    try:
        input_ids, labels = next(run["it"])
    except StopIteration:
        run["epoch"], run["step"] = run["epoch"] + 1, 0
        minimind_loader(run, run["epoch"], 0)
        input_ids, labels = next(run["it"])
    run["step"] += 1
    lr = get_lr(run["epoch"] * iters + run["step"], args.epochs * iters, args.learning_rate)
    for group in optimizer.param_groups:
        group["lr"] = lr
    _, loss = model(input_ids, labels)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return (loss.detach(), input_ids) if args.return_batch else loss.detach()


def _replace_save(obj, path: str) -> None:
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def minimind_save(run: dict, save_dir) -> None:
    """lm_checkpoint: the weights file and the resume file, side by side in save_dir."""
    args = run["args"]
    os.makedirs(save_dir, exist_ok=True)
    state_dict = {k: (v.half() if args.half else v).cpu() for k, v in run["model"].state_dict().items()}
    _replace_save(state_dict, f"{save_dir}/pretrain_{args.hidden_size}.pth")
    _replace_save({"model": state_dict, "optimizer": run["optimizer"].state_dict(), "epoch": run["epoch"],
                   "step": run["step"], "world_size": 1, "wandb_id": None, "scaler": run["scaler"].state_dict()},
                  f"{save_dir}/pretrain_{args.hidden_size}_resume.pth")


def minimind_load(run: dict, save_dir) -> dict:
    args = run["args"]
    ckp_data = torch.load(f"{save_dir}/pretrain_{args.hidden_size}_resume.pth", map_location="cpu")
    if args.load_bf16:
        ckp_data["model"] = {k: v.to(torch.bfloat16) for k, v in ckp_data["model"].items()}
    run["model"].load_state_dict(ckp_data["model"])
    run["optimizer"].load_state_dict(ckp_data["optimizer"])
    run["scaler"].load_state_dict(ckp_data["scaler"])
    run["epoch"] = ckp_data["epoch"]
    start_step = ckp_data.get("step", 0)
    if not args.forget_step:
        run["step"] = start_step + 1 if args.step_off_by_one else start_step
    minimind_loader(run, run["epoch"], 0 if args.forget_skip else run["step"])
    return run


# --------------------------------------------------------------------------- #
# nanoGPT: train.py (init_from='resume')
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class NanoConfig:
    learning_rate: float = 6e-3
    warmup_iters: int = 4
    dropout: float = 0.0  # nanoGPT's default for pretraining
    batch_size: int = BATCH
    from_iter: bool = False  # batches drawn from a generator seeded by iter_num (no global RNG)
    forget_iter_num: bool = False


def get_batch(run: dict, iter_num: int):
    data, cfg = run["data"], run["config"]
    g = torch.Generator().manual_seed(1337 + iter_num) if cfg.from_iter else None
    ix = torch.randint(len(data) - BLOCK - 1, (cfg.batch_size,), generator=g)
    x = torch.stack([data[i:i + BLOCK] for i in ix])
    y = torch.stack([data[i + 1:i + 1 + BLOCK] for i in ix])
    return x, y


def nanogpt_lr(cfg: NanoConfig, it: int) -> float:
    return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1) if it < cfg.warmup_iters else cfg.learning_rate


def _nanogpt_run(cfg: NanoConfig, model_args: dict, model: torch.nn.Module, iter_num: int) -> dict:
    run = {"config": cfg, "model_args": model_args, "model": model,
           "optimizer": torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate),
           "iter_num": iter_num, "best_val_loss": 1e9, "data": tokens(8).reshape(-1)}
    run["X"], run["Y"] = get_batch(run, iter_num)  # fetch the very first batch
    return run


def nanogpt_start(cfg: NanoConfig = NanoConfig()) -> dict:
    model_args = dict(n_embd=WIDTH, vocab_size=VOCAB, block_size=BLOCK, dropout=cfg.dropout)
    return _nanogpt_run(cfg, model_args, TinyLM(cfg.dropout), 0)


def nanogpt_step(run: dict):
    cfg, model, optimizer = run["config"], run["model"], run["optimizer"]
    for group in optimizer.param_groups:
        group["lr"] = nanogpt_lr(cfg, run["iter_num"])
    X, Y = run["X"], run["Y"]
    _, loss = model(X, Y)
    # immediately async prefetch next batch while model is doing the forward pass on the GPU
    run["X"], run["Y"] = get_batch(run, run["iter_num"] + 1)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    run["iter_num"] += 1
    return loss.detach(), X


def nanogpt_save(run: dict, path) -> None:
    torch.save({"model": run["model"].state_dict(), "optimizer": run["optimizer"].state_dict(),
                "model_args": run["model_args"], "iter_num": run["iter_num"],
                "best_val_loss": run["best_val_loss"], "config": asdict(run["config"])}, path)


def nanogpt_load(run: dict, path) -> dict:
    cfg = run["config"]
    checkpoint = torch.load(path, map_location="cpu")
    model_args = checkpoint["model_args"]
    model = TinyLM(model_args["dropout"])  # the model is built again from the checkpoint's model_args
    state_dict = checkpoint["model"]
    unwanted_prefix = "_orig_mod."
    for k in list(state_dict):
        if k.startswith(unwanted_prefix):
            state_dict[k[len(unwanted_prefix):]] = state_dict.pop(k)
    model.load_state_dict(state_dict)
    iter_num = 0 if cfg.forget_iter_num else checkpoint["iter_num"]
    resumed = _nanogpt_run(cfg, model_args, model, iter_num)
    resumed["optimizer"].load_state_dict(checkpoint["optimizer"])
    resumed["best_val_loss"] = checkpoint["best_val_loss"]
    return resumed


# --------------------------------------------------------------------------- #
# a resumable loader (torchdata's StatefulDataLoader, cut down): its state is the epoch start's
# generator state and the batches done; loading it replays the epoch's order and skips those
# --------------------------------------------------------------------------- #
class ResumableLoader:
    def __init__(self, n: int, batch: int, seed: int) -> None:
        self.n, self.batch = n, batch
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch, self.done, self.order, self.epoch_start = 0, 0, None, None

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        if self.order is None or self.done * self.batch >= self.n:
            if self.order is not None:
                self.epoch, self.done = self.epoch + 1, 0
            self.epoch_start = self.gen.get_state()
            self.order = torch.randperm(self.n, generator=self.gen)
        idx = self.order[self.done * self.batch:(self.done + 1) * self.batch]
        self.done += 1
        return idx

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "done": self.done, "epoch_start": self.epoch_start}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.done, self.epoch_start = state["epoch"], state["done"], state["epoch_start"]
        self.order = None
        if self.epoch_start is not None:
            self.gen.set_state(self.epoch_start)
            self.order = torch.randperm(self.n, generator=self.gen)


@dataclass(frozen=True)
class LoaderConfig:
    restore_loader: bool = True
    #: load sets the loader's generator back to the epoch start and leaves the batches done behind
    lose_position: bool = False


def stateful_start(cfg: LoaderConfig = LoaderConfig()):
    import types

    model = torch.nn.Linear(BLOCK, 2)
    g = torch.Generator().manual_seed(3)
    return types.SimpleNamespace(cfg=cfg, model=model, opt=torch.optim.SGD(model.parameters(), lr=0.1),
                                 x=torch.randn(N, BLOCK, generator=g), y=torch.randint(0, 2, (N,), generator=g),
                                 loader=ResumableLoader(N, BATCH, seed=5), step=0)


def stateful_step(run):
    idx = next(run.loader)
    loss = F.cross_entropy(run.model(run.x[idx]), run.y[idx])
    run.opt.zero_grad()
    loss.backward()
    run.opt.step()
    run.step += 1
    return loss.detach(), idx


def stateful_save(run, path) -> None:
    torch.save({"model": run.model.state_dict(), "opt": run.opt.state_dict(), "loader": run.loader.state_dict(),
                "step": run.step}, path)


def stateful_load(run, path):
    state = torch.load(path)
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["opt"])
    run.step = state["step"]
    if run.cfg.lose_position:  # back to the epoch's start: the order is drawn again, the batches done are lost
        run.loader.gen.set_state(state["loader"]["epoch_start"])
        run.loader.epoch = state["loader"]["epoch"]
    elif run.cfg.restore_loader:
        run.loader.load_state_dict(state["loader"])
    return run


# --------------------------------------------------------------------------- #
# a DataLoader whose iterator the step creates when it needs one; the save keeps the generator's state
# from the start of the epoch, and the load sets it back and skips the batches done (or forgets to)
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class LazyConfig:
    skip_done: bool = True


def lazy_start(cfg: LazyConfig = LazyConfig()):
    import types

    g = torch.Generator().manual_seed(3)
    data = torch.utils.data.TensorDataset(torch.randn(N, BLOCK, generator=g), torch.randint(0, 2, (N,), generator=g))
    model = torch.nn.Linear(BLOCK, 2)
    return types.SimpleNamespace(cfg=cfg, model=model, opt=torch.optim.SGD(model.parameters(), lr=0.1), step=0,
                                 loader=DataLoader(data, batch_size=BATCH, shuffle=True,
                                                   generator=torch.Generator().manual_seed(11)),
                                 it=None, epoch_gen=None)


def lazy_step(run):
    if run.it is None:
        run.epoch_gen = run.loader.generator.get_state()  # this epoch's order is drawn from here
        run.it = iter(run.loader)
    x, y = next(run.it)
    loss = F.cross_entropy(run.model(x), y)
    run.opt.zero_grad()
    loss.backward()
    run.opt.step()
    run.step += 1
    return loss.detach(), x


def lazy_save(run, path) -> None:
    torch.save({"model": run.model.state_dict(), "opt": run.opt.state_dict(), "step": run.step,
                "epoch_gen": run.epoch_gen}, path)


def lazy_load(run, path):
    state = torch.load(path)
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["opt"])
    run.step = state["step"]
    run.loader.generator.set_state(state["epoch_gen"])
    if run.cfg.skip_done:
        run.epoch_gen, run.it = state["epoch_gen"], iter(run.loader)
        for _ in range(run.step % len(run.loader)):
            next(run.it)
    return run


# --------------------------------------------------------------------------- #
# a rollback copy taken before each step, written by the save by mistake
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class PreStepConfig:
    save_pre_step: bool = False
    #: start builds the copy too (else only the step does)
    copy_in_start: bool = False


def prestep_start(cfg: PreStepConfig = PreStepConfig()):
    import types

    model = TinyLM()
    run = types.SimpleNamespace(cfg=cfg, model=model, opt=torch.optim.AdamW(model.parameters(), lr=1e-2),
                                data=tokens(), step=0)
    if cfg.copy_in_start:
        run.pre_step_model = copy.deepcopy(model)
    return run


def prestep_step(run):
    run.pre_step_model = copy.deepcopy(run.model)  # to roll back a step whose loss spikes
    batch = run.data[(run.step * BATCH) % N:][:BATCH]
    _, loss = run.model(batch[:, :-1], batch[:, 1:])
    run.opt.zero_grad()
    loss.backward()
    run.opt.step()
    run.step += 1
    return loss.detach(), batch


def prestep_save(run, path) -> None:
    model = run.pre_step_model if run.cfg.save_pre_step else run.model
    torch.save({"model": model.state_dict(), "opt": run.opt.state_dict(), "step": run.step}, path)


def prestep_load(run, path):
    state = torch.load(path)
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["opt"])
    run.step = state["step"]
    return run
