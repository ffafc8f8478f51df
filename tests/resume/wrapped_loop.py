"""minimind's and nanoGPT's resume shape: the save writes the raw model's weights whatever wraps it,
the resume restores into the bare model (and strips a stale torch.compile prefix), and the training
script wraps the model only afterwards; under the compile and ddp resume variations, the variation does
that wrapping (API 4.1). ``load_expects_ddp`` reaches into a DDP wrapper that is not there yet."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(16, 8)
        self.head = nn.Linear(8, 16)

    def forward(self, idx):
        return self.head(self.wte(idx))


def start():
    model = GPT()
    return {"model": model, "optimizer": torch.optim.AdamW(model.parameters(), lr=0.01), "iter_num": 0,
            "data": torch.Generator().manual_seed(0)}


def step(run):
    idx = torch.randint(0, 16, (4, 5), generator=run["data"])
    loss = F.cross_entropy(run["model"](idx).flatten(0, 1), idx.roll(1, 1).flatten())
    run["optimizer"].zero_grad()
    loss.backward()
    run["optimizer"].step()
    run["iter_num"] += 1
    return loss.detach(), idx


def save(run, path):
    raw = run["model"].module if isinstance(run["model"], DistributedDataParallel) else run["model"]
    raw = getattr(raw, "_orig_mod", raw)
    torch.save({"model": raw.state_dict(), "optimizer": run["optimizer"].state_dict(),
                "iter_num": run["iter_num"], "data": run["data"].get_state()}, path)


def load(run, path):
    checkpoint = torch.load(path, weights_only=True)
    state = checkpoint["model"]
    for k in list(state):  # nanoGPT's unwanted_prefix
        if k.startswith("_orig_mod."):
            state[k[len("_orig_mod."):]] = state.pop(k)
    run["model"].load_state_dict(state)  # the bare model: the script compiles or wraps it afterwards
    run["optimizer"].load_state_dict(checkpoint["optimizer"])
    run["iter_num"] = checkpoint["iter_num"]
    run["data"].set_state(checkpoint["data"])


def load_expects_ddp(run, path):
    checkpoint = torch.load(path, weights_only=True)
    run["model"].module.load_state_dict(checkpoint["model"])
    run["optimizer"].load_state_dict(checkpoint["optimizer"])
