"""Real (small) training loops with injectable resume bugs, for benchmarking resume checkers.

Each family is a module-level ``start/step/save/load`` set fitting the pytest-ckpt
``check_resume`` contract:

    start(config) -> run       # builds the run; never reseeds the global RNGs
    step(run) -> (loss, batch) # one optimizer step; batch = the sample indices used
    save(run, path)            # one file, written atomically (tmp + fsync + rename)
    load(run, path) -> run     # restores into a freshly started run (in place)

The bug is carried by the config: ``start(LoopConfig(bug="optimizer-not-saved"))``;
``bug=None`` is the correct loop. ``functions(family)`` returns the four functions,
``resume_points(family)`` the named save steps, ``BUGS[family]`` the bugs that apply.

Families (N = steps a benchmark runs; all steps counted from 1):

    mlp  : dataclass run.  48 samples / batch 8 -> epoch = 6 steps.  AdamW, LambdaLR:
           warm-up over steps 1-4, constant, x0.3 from step 11 on (milestone 10).
           Dropout (torch RNG), numpy + python `random` input augmentation,
           dict-of-tensors EMA whose decay warms up with run.step.  N = 14.
    gpt2 : dict run.  GPT2LMHeadModel (2 layers, 32 wide, vocab 64), 48 sequences / batch 8
           -> epoch = 6 steps.  AdamW, HF linear warm-up (8 steps) then linear decay;
           sequence-length curriculum driven by run["step"]: 16 tokens for steps 1-8,
           32 from step 9 on (milestone 8).  Dropout (torch RNG) only: the loop never
           draws from python/numpy, and its save stores only the torch RNG.  N = 14.
    amp  : SimpleNamespace run.  40 samples / batch 8 -> epoch = 5 steps.  fp16 autocast
           on CPU + torch.amp.GradScaler("cpu") (init 2**16, growth after 3 good steps; it
           overflows and skips steps 1, 5, 9: pattern -sss-sss-sss), SGD+momentum, MultiStepLR x0.1 from
           step 9 on (milestone 8).  Dropout (torch RNG).  run.step is a log-only
           counter.  N = 12.

The shuffled loader rolls over to the next epoch eagerly, right after the last batch of
an epoch, drawing the next permutation from its own torch.Generator (seeded from the
config, as real projects do).
"""
from __future__ import annotations

import os
import random
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

# The GradScaler skips the first optimizer steps (overflow), which makes torch warn about
# scheduler.step() before optimizer.step(): expected here.
warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")

BUG_NAMES = (
    "optimizer-not-saved",
    "optimizer-not-loaded",
    "scheduler-not-restored",
    "scaler-not-restored",
    "torch-rng-not-restored",
    "python-rng-not-restored",
    "numpy-rng-not-restored",
    "data-position-restarts",
    "data-generator-not-restored",
    "loader-not-restored",
    "counter-not-restored",
    "weights-before-last-step",
    "strict-false-loads-nothing",
    "ema-not-saved",
)

_COMMON = (
    "optimizer-not-saved", "optimizer-not-loaded", "scheduler-not-restored",
    "torch-rng-not-restored", "data-position-restarts", "data-generator-not-restored",
    "loader-not-restored", "counter-not-restored", "weights-before-last-step", "strict-false-loads-nothing",
)
BUGS: dict[str, tuple[str, ...]] = {
    "mlp": _COMMON + ("python-rng-not-restored", "numpy-rng-not-restored", "ema-not-saved"),
    "gpt2": _COMMON,  # no python/numpy draws, no EMA
    "amp": _COMMON + ("scaler-not-restored",),
}

# Per family: epoch length, scheduler milestone (the step after which the lr changes),
# default number of steps a check runs, and the named resume points (save after step `at`).
FAMILY_INFO: dict[str, dict[str, Any]] = {
    "mlp": {"epoch_len": 6, "milestone": 10, "warmup": 4, "steps": 14,
            "points": {"first": 1, "mid-epoch": 3, "before-epoch-end": 5, "epoch-end": 6,
                       "before-milestone": 9}},
    "gpt2": {"epoch_len": 6, "milestone": 8, "warmup": 8, "steps": 14,
             "points": {"first": 1, "mid-epoch": 3, "before-epoch-end": 5, "epoch-end": 6,
                        "before-milestone": 7}},
    "amp": {"epoch_len": 5, "milestone": 8, "warmup": 0, "steps": 12,
            "points": {"first": 1, "mid-epoch": 2, "before-epoch-end": 4, "epoch-end": 5,
                       "before-milestone": 7}},
}


def resume_points(family: str) -> dict[str, int]:
    """Named save steps for a family: first, mid-epoch, before-epoch-end, epoch-end, before-milestone."""
    return dict(FAMILY_INFO[family]["points"])


@dataclass(frozen=True)
class LoopConfig:
    """What start() gets. ``seed`` seeds the dataset and the loader's shuffle generator
    (never the global RNGs); ``bug`` selects the injected resume bug (None = correct)."""

    bug: Optional[str] = None
    seed: int = 1234


# --------------------------------------------------------------------------- #
# Shared pieces
# --------------------------------------------------------------------------- #
class ShuffledLoader:
    """Resumable shuffled batches of sample indices. Holds its position (epoch, index,
    the epoch's order) and its own shuffle generator; state_dict/load_state_dict."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.index = 0, 0
        self.order = torch.randperm(n, generator=self.generator)

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> "ShuffledLoader":
        return self

    def __next__(self) -> torch.Tensor:
        start = self.index * self.batch_size
        batch = self.order[start:start + self.batch_size]
        self.index += 1
        if self.index == len(self):  # eager roll-over: the next epoch's order is drawn now
            self.epoch, self.index = self.epoch + 1, 0
            self.order = torch.randperm(self.n, generator=self.generator)
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "order": self.order.clone(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any], *, restore_generator: bool = True) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self.order = state["order"].clone()
        if restore_generator:
            self.generator.set_state(state["generator"])


def _data_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed + 1)


def _rng_state(python: bool = True, numpy_: bool = True) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if python:
        state["python"] = random.getstate()
    if numpy_:
        state["numpy"] = np.random.get_state()
    return state


def _restore_rng(state: dict[str, Any], bug: Optional[str]) -> None:
    if "torch" in state and bug != "torch-rng-not-restored":
        torch.set_rng_state(state["torch"])
    if "python" in state and bug != "python-rng-not-restored":
        random.setstate(state["python"])
    if "numpy" in state and bug != "numpy-rng-not-restored":
        np.random.set_state(state["numpy"])


def _atomic_save(obj: Any, path: Any) -> None:
    """torch.save to a temporary file, fsync, rename: a crash never leaves a torn checkpoint."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _load_file(path: Any) -> dict[str, Any]:
    # Our own file: holds python/numpy RNG states, which weights_only refuses.
    return torch.load(os.fspath(path), map_location="cpu", weights_only=False)


# weights-before-last-step: a checkpointer that snapshots the weights at the start of each
# step (e.g. an async/rollback copy) and later writes that stale copy. Kept outside the run,
# keyed by id(run), and filled only for that bug, so correct runs hold no extra state.
_PRE_STEP_WEIGHTS: dict[int, dict[str, torch.Tensor]] = {}


def _maybe_snapshot_weights(run_id: int, model: torch.nn.Module, bug: Optional[str]) -> None:
    if bug == "weights-before-last-step":
        _PRE_STEP_WEIGHTS[run_id] = {k: v.detach().clone() for k, v in model.state_dict().items()}


def _model_state_to_save(run_id: int, model: torch.nn.Module, bug: Optional[str]) -> dict[str, torch.Tensor]:
    if bug == "weights-before-last-step":
        return dict(_PRE_STEP_WEIGHTS[run_id])
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if bug == "strict-false-loads-nothing":  # saved from a DDP-wrapped model: "module." prefix
        state = {"module." + k: v for k, v in state.items()}
    return state


def _load_model(model: torch.nn.Module, state: dict[str, torch.Tensor], bug: Optional[str]) -> None:
    if bug == "strict-false-loads-nothing":
        model.load_state_dict(state, strict=False)  # minimind pattern: every key unexpected, nothing loads
    else:
        model.load_state_dict(state)


def _load_loader(loader: ShuffledLoader, state: dict[str, Any], bug: Optional[str]) -> None:
    if bug == "loader-not-restored":  # saved with the checkpoint, never loaded: the loader start built goes on
        return
    loader.load_state_dict(state, restore_generator=bug != "data-generator-not-restored")
    if bug == "data-position-restarts":
        loader.index = 0  # restarts from the first batch of the saved epoch


def _optimizer_to_save(optimizer: torch.optim.Optimizer, bug: Optional[str]) -> Optional[dict[str, Any]]:
    return None if bug == "optimizer-not-saved" else optimizer.state_dict()


def _load_optimizer(optimizer: torch.optim.Optimizer, state: Optional[dict[str, Any]], bug: Optional[str]) -> None:
    if state is not None and bug != "optimizer-not-loaded":
        optimizer.load_state_dict(state)


# --------------------------------------------------------------------------- #
# (a) mlp: dataclass run
# --------------------------------------------------------------------------- #
MLP_N, MLP_BATCH, MLP_IN, MLP_CLASSES = 48, 8, 16, 4


def mlp_lr_lambda(step: int) -> float:
    """Scheduler factor after `step` scheduler steps: warm-up, constant, x0.3 after milestone 10."""
    if step < 4:
        return (step + 1) / 4
    return 1.0 if step < 10 else 0.3


@dataclass
class MlpRun:
    config: LoopConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: ShuffledLoader
    x: torch.Tensor
    y: torch.Tensor
    ema: dict[str, torch.Tensor] = field(default_factory=dict)
    step: int = 0


def mlp_start(config: LoopConfig = LoopConfig()) -> MlpRun:
    g = _data_generator(config.seed)
    x = torch.randn(MLP_N, MLP_IN, generator=g)
    teacher = torch.randn(MLP_IN, MLP_CLASSES, generator=g)
    y = (x @ teacher).argmax(dim=1)
    model = torch.nn.Sequential(
        torch.nn.Linear(MLP_IN, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(32, MLP_CLASSES)
    )  # initialised from the global torch RNG, as usual
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, mlp_lr_lambda)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return MlpRun(config, model, optimizer, scheduler, ShuffledLoader(MLP_N, MLP_BATCH, config.seed), x, y, ema)


def mlp_step(run: MlpRun) -> tuple[torch.Tensor, torch.Tensor]:
    _maybe_snapshot_weights(id(run), run.model, run.config.bug)
    idx = next(run.loader)
    x, y = run.x[idx], run.y[idx]
    x = x + torch.from_numpy(np.random.normal(0.0, 0.05, size=tuple(x.shape)).astype(np.float32))  # numpy noise
    x = x * random.uniform(0.9, 1.1)  # python random scale
    run.model.train()
    loss = F.cross_entropy(run.model(x), y)  # dropout: torch RNG
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.scheduler.step()
    run.step += 1
    decay = min(0.99, (1 + run.step) / (10 + run.step))  # EMA warm-up driven by the counter
    with torch.no_grad():
        for k, v in run.model.state_dict().items():
            run.ema[k].mul_(decay).add_(v, alpha=1 - decay)
    return loss.detach(), idx


def mlp_save(run: MlpRun, path: Any) -> None:
    bug = run.config.bug
    state = {
        "model": _model_state_to_save(id(run), run.model, bug),
        "optimizer": _optimizer_to_save(run.optimizer, bug),
        "scheduler": run.scheduler.state_dict(),
        "loader": run.loader.state_dict(),
        "step": run.step,
        "rng": _rng_state(),
    }
    if bug != "ema-not-saved":
        state["ema"] = {k: v.clone() for k, v in run.ema.items()}
    _atomic_save(state, path)


def mlp_load(run: MlpRun, path: Any) -> MlpRun:
    bug = run.config.bug
    state = _load_file(path)
    _load_model(run.model, state["model"], bug)
    _load_optimizer(run.optimizer, state["optimizer"], bug)
    if bug != "scheduler-not-restored":
        run.scheduler.load_state_dict(state["scheduler"])
    _load_loader(run.loader, state["loader"], bug)
    if bug != "counter-not-restored":
        run.step = int(state["step"])
    if "ema" in state:
        for k, v in state["ema"].items():
            run.ema[k].copy_(v)
    _restore_rng(state["rng"], bug)
    return run


# --------------------------------------------------------------------------- #
# (b) gpt2: dict run
# --------------------------------------------------------------------------- #
GPT2_N, GPT2_BATCH, GPT2_VOCAB, GPT2_TOKENS = 48, 8, 64, 33
GPT2_WARMUP, GPT2_TOTAL, GPT2_SWITCH = 8, 16, 8


def gpt2_seq_len(step_counter: int) -> int:
    """Curriculum: 16 tokens while fewer than GPT2_SWITCH steps are done, then 32."""
    return 16 if step_counter < GPT2_SWITCH else 32


def gpt2_start(config: LoopConfig = LoopConfig()) -> dict[str, Any]:
    from transformers import GPT2Config, GPT2LMHeadModel, get_linear_schedule_with_warmup

    tokens = torch.randint(0, GPT2_VOCAB, (GPT2_N, GPT2_TOKENS), generator=_data_generator(config.seed))
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=GPT2_VOCAB, n_positions=32,
                     bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    model = GPT2LMHeadModel(cfg)
    model.loss_type = "ForCausalLM"  # silences transformers' "unrecognized loss_type" warning
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, GPT2_WARMUP, GPT2_TOTAL)
    return {"config": config, "model": model, "optimizer": optimizer, "scheduler": scheduler,
            "loader": ShuffledLoader(GPT2_N, GPT2_BATCH, config.seed), "tokens": tokens, "step": 0}


def gpt2_step(run: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    model = run["model"]
    _maybe_snapshot_weights(id(run), model, run["config"].bug)
    idx = next(run["loader"])
    ids = run["tokens"][idx, :gpt2_seq_len(run["step"])]
    model.train()
    loss = model(input_ids=ids, labels=ids).loss  # dropout: torch RNG
    run["optimizer"].zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    run["optimizer"].step()
    run["scheduler"].step()
    run["step"] += 1
    return loss.detach(), idx


def gpt2_save(run: dict[str, Any], path: Any) -> None:
    bug = run["config"].bug
    _atomic_save({
        "model": _model_state_to_save(id(run), run["model"], bug),
        "optimizer": _optimizer_to_save(run["optimizer"], bug),
        "scheduler": run["scheduler"].state_dict(),
        "loader": run["loader"].state_dict(),
        "step": run["step"],
        "rng": _rng_state(python=False, numpy_=False),  # the loop draws only from torch
    }, path)


def gpt2_load(run: dict[str, Any], path: Any) -> dict[str, Any]:
    bug = run["config"].bug
    state = _load_file(path)
    _load_model(run["model"], state["model"], bug)
    _load_optimizer(run["optimizer"], state["optimizer"], bug)
    if bug != "scheduler-not-restored":
        run["scheduler"].load_state_dict(state["scheduler"])
    _load_loader(run["loader"], state["loader"], bug)
    if bug != "counter-not-restored":
        run["step"] = int(state["step"])
    _restore_rng(state["rng"], bug)
    return run


# --------------------------------------------------------------------------- #
# (c) amp: SimpleNamespace run, fp16 autocast + GradScaler on CPU
# --------------------------------------------------------------------------- #
AMP_N, AMP_BATCH, AMP_IN, AMP_CLASSES = 40, 8, 16, 4


def amp_start(config: LoopConfig = LoopConfig()) -> types.SimpleNamespace:
    g = _data_generator(config.seed)
    x = torch.randn(AMP_N, AMP_IN, generator=g) * 4
    y = torch.randint(0, AMP_CLASSES, (AMP_N,), generator=g)
    model = torch.nn.Sequential(
        torch.nn.Linear(AMP_IN, 64), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(64, AMP_CLASSES)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[8], gamma=0.1)
    # Enabled on CPU in torch 2.13. The scale overflows fp16 at step 1 and then every 4th
    # step (skipped steps: 1, 5, 9), so the scale and growth tracker change the training.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16, growth_interval=3)
    return types.SimpleNamespace(config=config, model=model, optimizer=optimizer, scheduler=scheduler,
                                 scaler=scaler, loader=ShuffledLoader(AMP_N, AMP_BATCH, config.seed),
                                 x=x, y=y, step=0)


def amp_step(run: types.SimpleNamespace) -> tuple[torch.Tensor, torch.Tensor]:
    _maybe_snapshot_weights(id(run), run.model, run.config.bug)
    idx = next(run.loader)
    run.model.train()
    with torch.autocast("cpu", dtype=torch.float16):
        logits = run.model(run.x[idx])
    loss = F.cross_entropy(logits.float(), run.y[idx])
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)  # skipped when the scaled gradients overflowed
    run.scaler.update()
    run.scheduler.step()
    run.step += 1  # log-only counter
    return loss.detach(), idx


def amp_save(run: types.SimpleNamespace, path: Any) -> None:
    bug = run.config.bug
    _atomic_save({
        "model": _model_state_to_save(id(run), run.model, bug),
        "optimizer": _optimizer_to_save(run.optimizer, bug),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "loader": run.loader.state_dict(),
        "step": run.step,
        "rng": _rng_state(python=False, numpy_=False),
    }, path)


def amp_load(run: types.SimpleNamespace, path: Any) -> types.SimpleNamespace:
    bug = run.config.bug
    state = _load_file(path)
    _load_model(run.model, state["model"], bug)
    _load_optimizer(run.optimizer, state["optimizer"], bug)
    if bug != "scheduler-not-restored":
        run.scheduler.load_state_dict(state["scheduler"])
    if bug != "scaler-not-restored":
        run.scaler.load_state_dict(state["scaler"])
    _load_loader(run.loader, state["loader"], bug)
    if bug != "counter-not-restored":
        run.step = int(state["step"])
    _restore_rng(state["rng"], bug)
    return run


# --------------------------------------------------------------------------- #
# Lookup
# --------------------------------------------------------------------------- #
FAMILIES = ("mlp", "gpt2", "amp")
_FUNCTIONS: dict[str, tuple[Callable, Callable, Callable, Callable]] = {
    "mlp": (mlp_start, mlp_step, mlp_save, mlp_load),
    "gpt2": (gpt2_start, gpt2_step, gpt2_save, gpt2_load),
    "amp": (amp_start, amp_step, amp_save, amp_load),
}


def functions(family: str) -> tuple[Callable, Callable, Callable, Callable]:
    """(start, step, save, load) of a family."""
    return _FUNCTIONS[family]


def config(family: str, bug: Optional[str] = None, seed: int = 1234) -> LoopConfig:
    """The LoopConfig for (family, bug); rejects bugs that do not apply to the family."""
    if bug is not None and bug not in BUGS[family]:
        raise ValueError(f"bug {bug!r} does not apply to family {family!r}")
    return LoopConfig(bug=bug, seed=seed)


def seed_all(seed: int) -> None:
    """Seed python `random`, numpy and torch, as the checker does."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def components(run: Any) -> dict[str, Any]:
    """The run's named attributes/items (dataclass, dict or namespace), for adapters."""
    return dict(run) if isinstance(run, dict) else dict(vars(run))
