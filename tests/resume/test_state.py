"""pc.run_state: the components of a run found by type, with their paths and kinds."""

from __future__ import annotations

import random
import types
from dataclasses import dataclass, field

import torch

import pytest_ckpt as pc
from tests.resume import loops as L


def kinds(run, **kw) -> list[tuple[str, str]]:
    return [(c.path, c.kind) for c in pc.run_state(run, **kw)]


def test_str_lists_each_component_with_its_path_and_kind():
    run = L.start(L.config())
    assert str(pc.run_state(run, streams=("python", "numpy", "torch"))) == """\
run state: 11 components (+3 global streams)
  run.model             module (Net, 4 tensors; trained by run.optimizer)
  run.optimizer         optimizer (AdamW, 1 param group)
  run.scheduler         scheduler (LambdaLR)
  run.loader            data (Loader)
  run.loader.generator  generator (Generator)
  run.ema               tensors (4 tensors)
  run.x                 tensor (Tensor (24, 6))
  run.y                 tensor (Tensor (24,))
  run.step              counter (int 0)
  run.warm              counter (bool False)
  run.config            config (Config, 2 fields)
  python                global-rng (compared when a step draws from it)
  numpy                 global-rng (compared when a step draws from it)
  torch                 global-rng (compared when a step draws from it)"""


class Meter:
    """A plain object with state_dict(): state of its own."""

    def __init__(self) -> None:
        self.count = 0

    def state_dict(self):
        return {"count": self.count}


@dataclass
class Trainer:
    model: torch.nn.Module
    history: list = field(default_factory=list)


def test_every_container_is_walked_and_found_by_type():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.utils.data.TensorDataset(torch.randn(8, 2))
    loader = torch.utils.data.DataLoader(data, batch_size=2, shuffle=True, generator=torch.Generator())
    holder = types.SimpleNamespace(rng=random.Random(3), device=torch.device("cpu"), name="x")
    run = {
        "trainer": Trainer(model, [0.5, 0.4]),
        "ema": torch.optim.swa_utils.AveragedModel(model),
        "opts": [opt],
        "sched": torch.optim.lr_scheduler.ReduceLROnPlateau(opt),
        "scaler": torch.amp.GradScaler("cpu"),
        "loader": loader, "it": iter(loader), "holder": holder, "meter": Meter(),
        "params": list(model.parameters()),  # the module's own parameters: not more state
        "epoch": 0, "best": float("inf"),
    }
    run["self"] = run  # a cycle
    assert kinds(run, streams=()) == [
        ('run["trainer"].model', "module"), ('run["ema"]', "module"), ('run["opts"][0]', "optimizer"),
        ('run["sched"]', "scheduler"), ('run["scaler"]', "scaler"), ('run["it"]', "data"),
        ('run["loader"].generator', "generator"), ('run["holder"].rng', "generator"), ('run["meter"]', "state"),
        ('run["trainer"].history', "counter"), ('run["epoch"]', "counter"), ('run["best"]', "counter"),
    ]


def test_a_modules_children_and_torch_internals_are_not_walked():
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = torch.nn.Linear(2, 2)
            self.steps = 0  # inside the module: its state_dict's business, not a counter of the run

    rs = pc.run_state({"net": Net(), "dev": torch.device("cpu"), "dtype": torch.float16}, streams=())
    assert [(c.path, c.kind) for c in rs] == [('run["net"]', "module")]


def test_a_dict_of_tensors_is_one_component_and_wrapped_modules_are_named_inside():
    model = torch.nn.Linear(2, 2)
    wrapped = torch.compile(model, backend="eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rs = pc.run_state(types.SimpleNamespace(model=wrapped, opt=opt, ema={"w": torch.zeros(2)}), streams=())
    assert [(c.path, c.kind) for c in rs] == [("run.model", "module"), ("run.opt", "optimizer"),
                                              ("run.ema", "tensors")]
    assert "run.model  module (Linear in OptimizedModule, 2 tensors; trained by run.opt)" in str(rs)
    assert sorted(rs.param_names().values()) == ["bias", "weight"]
    assert [c.path for c in rs.trained_modules()] == ["run.model"]


def test_the_global_streams_are_those_of_this_process():
    rs = pc.run_state(types.SimpleNamespace(model=torch.nn.Linear(1, 1)))
    assert rs.streams[:3] == ("python", "numpy", "torch")
    assert ("cuda" in rs.streams) == torch.cuda.is_available()
