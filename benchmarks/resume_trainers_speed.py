"""Issue 24's speed target: ``pc.check_resume_hf`` costs at most 3.5 uninterrupted ``train()`` runs.

The floor is about 2.5 runs: the uninterrupted ``train()`` twice (the reproducibility gate), the
first writing ``checkpoint-<at>`` through the Trainer's own save and going on (it *is* the
interrupted run's first half), then the resumed half. On top: one ``make_trainer`` more (the
arguments are read before anything runs), the state captured after each step and at the resume
point, and the checkpoint linked into the resumed run's ``output_dir``. One run is what a user
runs: ``make_trainer(dir).train()``. Medians of interleaved rounds, one torch thread:

- a tiny Llama (hidden 16, 2 layers, vocab 64, attention dropout), AdamW with warm-up, 10 steps,
  resumed after step 5 (mid-epoch), CPU;
- the same shape for Lightning: an MLP with dropout, AdamW and a step schedule, 10 steps of a
  4-batch epoch, resumed after step 4 (an epoch end), with the RNG callback that makes it exact.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import torch

import harness

GOAL = 3.5
STEPS = 10


def _hf():
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                      attention_dropout=0.1)
    ids = torch.randint(0, 64, (32, 8), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": row, "labels": row} for row in ids]

    def make_trainer(output_dir: str):
        args = transformers.TrainingArguments(
            output_dir=output_dir, max_steps=STEPS, per_device_train_batch_size=4, learning_rate=1e-2,
            warmup_steps=2, report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
            save_strategy="no", logging_strategy="no")
        return transformers.Trainer(model=transformers.LlamaForCausalLM(config), args=args, train_dataset=data)

    return make_trainer


def _lightning():
    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from torch import nn

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g))

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))

        def training_step(self, batch, batch_idx):
            return nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.parameters(), lr=1e-2)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)]

    class RNGState(Callback):
        def state_dict(self):
            return {"torch": torch.get_rng_state()}

        def load_state_dict(self, state_dict):
            torch.set_rng_state(state_dict["torch"])

    def make_trainer(root: str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return L.Trainer(default_root_dir=root, max_steps=STEPS, accelerator="cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[RNGState()])

    return Net, make_trainer, lambda: torch.utils.data.DataLoader(data, batch_size=4, shuffle=True)


def _rows(label: str, t: dict[str, harness.Timing], detail: str) -> list[harness.Row]:
    """The check over one run as the user runs it, and over one run with the heap set aside as the check
    sets it aside (``gc.freeze``): the second is the check's own cost in runs."""
    floor = "floor about 2.5 runs: 2 uninterrupted runs, the resumed half, 1 trainer built more"
    return [harness.Row("24", f"`{label}` / one uninterrupted run, {detail}", t["check"].median / t["one run"].median,
                        "x", limit=GOAL, note=f"check {t['check'].median:.2f} s, one run {t['one run'].median:.2f} s; "
                                              f"{floor}", spread=t["check"].spread),
            harness.Row("24", f"`{label}` / one uninterrupted run with the heap frozen as in the check, {detail}",
                        t["check"].median / t["one run, heap frozen"].median, "x",
                        note=f"one run {t['one run, heap frozen'].median:.2f} s; {floor}",
                        spread=t["one run, heap frozen"].spread)]


def _frozen(fn):
    from pytest_ckpt.checks.trainers.check import frozen_heap

    def run():
        with frozen_heap():
            fn()
    return run


def run(work: Path, rounds: int) -> list[harness.Row]:
    import pytest_ckpt as pc

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # the frameworks' advice on workers and loggers
    work = Path(tempfile.mkdtemp(prefix="ckpt-trainers-bench-", dir=work))
    counter = iter(range(10**6))
    make_hf = _hf()

    def hf_run():
        make_hf(str(work / f"hf-{next(counter)}")).train()

    hf = harness.interleaved({"one run": hf_run, "one run, heap frozen": _frozen(hf_run),
                              "check": lambda: pc.check_resume_hf(make_hf, at=STEPS // 2)}, rounds=rounds)
    net, make_lightning, loader = _lightning()

    def lightning_run():
        make_lightning(str(work / f"lit-{next(counter)}")).fit(net(), loader())

    lit = harness.interleaved({"one run": lightning_run, "one run, heap frozen": _frozen(lightning_run),
                               "check": lambda: pc.check_resume_lightning(net, make_lightning, loader, at=4)},
                              rounds=rounds)
    return [*_rows("pc.check_resume_hf", hf, f"tiny Llama Trainer ({STEPS} steps, resumed after {STEPS // 2})"),
            *_rows("pc.check_resume_lightning", lit, f"tiny Lightning MLP ({STEPS} steps, resumed after 4)")]


if __name__ == "__main__":
    import sys

    for row in run(Path(tempfile.mkdtemp()), int(sys.argv[1]) if len(sys.argv) > 1 else 5):
        print(f"{row.measure}: {row.value:.2f}x ({row.note}; range {row.spread})")
