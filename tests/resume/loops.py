"""Real, tiny training loops for the resume check, with resume bugs switched on by the config.

Module-level functions, so the fresh-process variation can import them. ``Config(bugs=...)`` names the
bugs; the empty set is the correct loop.

mlp: a dataclass run. 24 samples, batches of 4: an epoch is 6 steps, and the loader draws the next
epoch's order from its own torch.Generator when the epoch starts. AdamW, a warm-up LambdaLR, dropout
(torch RNG), numpy and python ``random`` noise on the inputs, a dict EMA, a step counter.
"""

from __future__ import annotations

import os
import random
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

N, BATCH, FEATURES, CLASSES = 24, 4, 6, 3

BUGS = (
    "optimizer-not-saved", "optimizer-not-loaded", "scheduler-not-restored", "torch-rng-not-restored",
    "python-rng-not-restored", "numpy-rng-not-restored", "data-position-restarts",
    "data-generator-not-restored", "counter-not-restored", "weights-before-last-step",
    "strict-false-loads-nothing", "ema-not-saved",
)
#: bugs the loop also knows, outside the twelve classes: a flag that only matters from step 4 on
EXTRA_BUGS = ("warm-flag-not-restored",)


@dataclass(frozen=True)
class Config:
    bugs: frozenset = frozenset()
    seed: int = 7

    def has(self, bug: str) -> bool:
        return bug in self.bugs


def config(*bugs: str) -> Config:
    return Config(frozenset(bugs))


class Loader:
    """Shuffled batches of sample indices; resumable: its position and generator in state_dict()."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        self.n, self.batch = n, batch
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.index, self.order = 0, 0, None

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        if self.order is None or self.index * self.batch >= self.n:
            if self.order is not None:
                self.epoch += 1
            self.order, self.index = torch.randperm(self.n, generator=self.generator), 0
        idx = self.order[self.index * self.batch:(self.index + 1) * self.batch]
        self.index += 1
        return idx

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index,
                "order": None if self.order is None else self.order.clone(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict, *, generator: bool = True) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self.order = None if state["order"] is None else state["order"].clone()
        if generator:
            self.generator.set_state(state["generator"])


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                        torch.nn.Linear(16, CLASSES))

    def forward(self, x):
        return self.body(x)


def bare(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside torch.compile / DDP: the EMA keeps the model's own names."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def warmup(step: int) -> float:
    return min(1.0, (step + 1) / 4)


@dataclass
class Run:
    config: Config
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loader: Loader
    x: torch.Tensor
    y: torch.Tensor
    ema: dict = field(default_factory=dict)
    step: int = 0
    warm: bool = False  # set from step 4 on: a resume before it cannot miss it


# weights-before-last-step: a checkpointer that copies the weights at the start of each step and later
# writes that stale copy; kept outside the run (by id), as such helpers usually are
_BEFORE_STEP: dict[int, dict] = {}


def start(config: Config = Config()) -> Run:
    g = torch.Generator().manual_seed(config.seed)
    x = torch.randn(N, FEATURES, generator=g)
    y = torch.randint(0, CLASSES, (N,), generator=g)
    model = Net()  # initialised from the global torch RNG, as usual
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Run(config, model, optimizer, scheduler, Loader(N, BATCH, config.seed + 1), x, y, ema)


def step(run: Run):
    if run.config.has("weights-before-last-step"):
        _BEFORE_STEP[id(run)] = {k: v.detach().clone() for k, v in bare(run.model).state_dict().items()}
    idx = next(run.loader)
    x = run.x[idx] + torch.from_numpy(np.random.normal(0, 0.05, (len(idx), FEATURES)).astype(np.float32))
    x = x * random.uniform(0.9, 1.1)
    run.model.train()
    loss = F.cross_entropy(run.model(x), run.y[idx])
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.scheduler.step()
    run.step += 1
    run.warm = run.warm or run.step >= 4
    with torch.no_grad():
        for k, v in bare(run.model).state_dict().items():
            run.ema[k].mul_(0.9).add_(v, alpha=0.1)
    return loss.detach(), idx


def save(run: Run, path) -> None:
    c = run.config
    # the module inside a wrapper: the resume restores into the bare model, then wraps it (API 4.1)
    model = _BEFORE_STEP[id(run)] if c.has("weights-before-last-step") else bare(run.model).state_dict()
    if c.has("strict-false-loads-nothing"):
        model = {"module." + k: v for k, v in model.items()}  # saved from a DDP-wrapped model
    state = {
        "model": model,
        "optimizer": None if c.has("optimizer-not-saved") else run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "loader": run.loader.state_dict(),
        "step": run.step,
        "warm": run.warm,
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
    }
    if not c.has("ema-not-saved"):
        state["ema"] = run.ema
    torch.save(state, path)


def load(run: Run, path) -> Run:
    c = run.config
    state = torch.load(path, weights_only=False)
    run.model.load_state_dict(state["model"], strict=not c.has("strict-false-loads-nothing"))
    if state["optimizer"] is not None and not c.has("optimizer-not-loaded"):
        run.optimizer.load_state_dict(state["optimizer"])
    if not c.has("scheduler-not-restored"):
        run.scheduler.load_state_dict(state["scheduler"])
    run.loader.load_state_dict(state["loader"], generator=not c.has("data-generator-not-restored"))
    if c.has("data-position-restarts"):
        run.loader.index = 0
    if not c.has("counter-not-restored"):
        run.step = state["step"]
    if not c.has("warm-flag-not-restored"):
        run.warm = state["warm"]
    for k, v in state.get("ema", {}).items():
        run.ema[k].copy_(v)
    rng = state["rng"]
    if not c.has("torch-rng-not-restored"):
        torch.set_rng_state(rng["torch"])
    if not c.has("python-rng-not-restored"):
        random.setstate(rng["python"])
    if not c.has("numpy-rng-not-restored"):
        np.random.set_state(rng["numpy"])
    return run


# --------------------------------------------------------------------------- #
# amp: fp16 autocast on the CPU with a GradScaler whose scale moves (overflows skip steps)
# --------------------------------------------------------------------------- #
def amp_start(config: Config = Config()) -> types.SimpleNamespace:
    g = torch.Generator().manual_seed(config.seed)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, CLASSES))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 20, growth_interval=2)
    return types.SimpleNamespace(config=config, model=model, optimizer=optimizer, scaler=scaler,
                                 x=torch.randn(N, FEATURES, generator=g) * 4,
                                 y=torch.randint(0, CLASSES, (N,), generator=g), step=0)


def amp_step(run):
    lo = (run.step * BATCH) % N
    x, y = run.x[lo:lo + BATCH], run.y[lo:lo + BATCH]
    with torch.autocast("cpu", dtype=torch.float16):
        logits = run.model(x)
    loss = F.cross_entropy(logits.float(), y)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.step += 1
    return loss.detach(), (lo,)


def amp_save(run, path) -> None:
    torch.save({"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                "scaler": run.scaler.state_dict(), "step": run.step}, path)


def amp_load(run, path):
    state = torch.load(path, weights_only=True)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if not run.config.has("scaler-not-restored"):
        run.scaler.load_state_dict(state["scaler"])
    run.step = state["step"]
    return run


# --------------------------------------------------------------------------- #
# state the check cannot see, and a loop that is not reproducible
# --------------------------------------------------------------------------- #
_HIDDEN = {"steps": 0}
_CALLS = {"n": 0}


def hidden_start(config: Config = Config()) -> Run:
    _HIDDEN["steps"] = 0  # a module-level global: not in the run, not in the checkpoint
    return start(config)


def hidden_step(run: Run):
    _HIDDEN["steps"] += 1
    loss, idx = step(run)
    return loss * (1 + 0.01 * _HIDDEN["steps"]), idx


def unreproducible_step(run: Run):
    _CALLS["n"] += 1  # never reset: the second uninterrupted run sees other numbers
    loss, idx = step(run)
    return loss + 0.001 * _CALLS["n"], idx


def dir_save(run: Run, path) -> None:
    """A save that writes a directory (as DCP does)."""
    os.makedirs(path, exist_ok=True)
    save(run, os.path.join(path, "state.pt"))


def dir_load(run: Run, path) -> Run:
    return load(run, os.path.join(path, "state.pt"))


# --------------------------------------------------------------------------- #
# stream: the data position lives in a python generator the check cannot see; only the batches tell
# --------------------------------------------------------------------------- #
def _batches(n: int):
    i = 0
    while True:
        yield torch.arange(i, i + BATCH) % n
        i += BATCH


def stream_start(config: Config = Config()) -> dict:
    g = torch.Generator().manual_seed(config.seed)
    model = torch.nn.Linear(FEATURES, CLASSES)
    return {"config": config, "model": model, "opt": torch.optim.SGD(model.parameters(), lr=0.1),
            "x": torch.randn(N, FEATURES, generator=g), "y": torch.randint(0, CLASSES, (N,), generator=g),
            "batches": _batches(N), "step": 0}


def stream_step(run: dict):
    idx = next(run["batches"])
    loss = F.cross_entropy(run["model"](run["x"][idx]), run["y"][idx])
    run["opt"].zero_grad()
    loss.backward()
    run["opt"].step()
    run["step"] += 1
    return loss.detach(), idx


def stream_save(run: dict, path) -> None:
    torch.save({"model": run["model"].state_dict(), "opt": run["opt"].state_dict(), "step": run["step"]}, path)


def stream_load(run: dict, path) -> dict:
    state = torch.load(path)
    run["model"].load_state_dict(state["model"])
    run["opt"].load_state_dict(state["opt"])
    run["step"] = state["step"]
    skip = {"data-position-restarts": 0, "data-skips-ahead": state["step"] + 2}
    done = next((skip[b] for b in run["config"].bugs if b in skip), state["step"])
    for _ in range(done):  # fast-forward the data to where the run stopped
        next(run["batches"])
    return run


# --------------------------------------------------------------------------- #
# a resume that only works in the same process: the optimizer state is kept in memory, not in the file
# --------------------------------------------------------------------------- #
_IN_MEMORY: dict[str, dict] = {}


def memory_save(run: Run, path) -> None:
    save(run, path)
    _IN_MEMORY[os.fspath(path)] = run.optimizer.state_dict()  # "faster than writing it": lost with the process


def memory_load(run: Run, path) -> Run:
    state = torch.load(path, weights_only=False)
    state["optimizer"] = _IN_MEMORY.get(os.fspath(path))
    torch.save(state, path)
    return load(run, path)
