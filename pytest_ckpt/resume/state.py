"""``run_state(run)``: the components of a training run, found by type, each with its path and kind.

The walk goes through dicts, lists, tuples, dataclasses, namespaces and plain objects, and stops at
what it recognizes: a module (its top level only), an optimizer, an LR scheduler, a GradScaler, a
random generator, a data loader or iterator, any object with ``state_dict()``, a config (one
component, not one counter per field), a counter, a tensor, a mapping of tensors. It never walks
into torch internals, a module's children or a cycle.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import random
import re
import sys
import types
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch

#: how deep the walk follows containers and attributes from the run
MAX_DEPTH = 6
#: items of a list or tuple walked (a list of 10,000 records is data, not training state)
MAX_ITEMS = 64
#: attributes that hold a dataset, never training state: walking them would copy the data
DATA_ATTRIBUTES = frozenset({"dataset", "data_source", "_dataset", "collate_fn", "worker_init_fn"})

#: component kinds, in the order ``str(RunState)`` lists them
KINDS = ("module", "optimizer", "scheduler", "scaler", "data", "generator", "state",
         "tensors", "tensor", "counter", "config", "global-rng")
#: a class, attribute or key named so, holding only plain values, is a config: settings, not training state
CONFIG_NAME = re.compile(r"(config|configuration|cfg|conf|args|arguments|hparams|hyperparameters|settings)$",
                         re.IGNORECASE)
#: transformers' config classes, recognized without importing transformers
CONFIG_CLASSES = frozenset({"PretrainedConfig", "PreTrainedConfig"})


@dataclass(frozen=True)
class Component:
    """One piece of a run's state: where it is (``path``), what it is (``kind``), the object itself.

    ``parent``/``key``/``access`` say how to put a replacement back (used to wrap modules).
    """

    path: str
    kind: str
    obj: Any = dataclasses.field(repr=False, compare=False, default=None)
    parent: Any = dataclasses.field(repr=False, compare=False, default=None)
    key: Any = dataclasses.field(repr=False, compare=False, default=None)
    access: str = dataclasses.field(repr=False, compare=False, default="")
    #: the data pipeline's own bookkeeping (a DataLoader iterator's batch count, a sampler's cursor):
    #: its batches are the evidence of its position, not these numbers
    bookkeeping: bool = dataclasses.field(repr=False, compare=False, default=False)

    def replace_in_run(self, new: Any) -> None:
        """Put ``new`` where this component's object is (an attribute or an item of its parent)."""
        if self.access == "attr":
            setattr(self.parent, self.key, new)
        elif self.access == "item" and not isinstance(self.parent, tuple):
            self.parent[self.key] = new
        else:
            raise TypeError(f"{self.path} cannot be replaced in place (it is held by a tuple or is the run)")


@dataclass(frozen=True)
class RunState:
    """The components of a run; what :func:`pytest_ckpt.check_resume` compares is exactly this.

    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> run = {"model": model, "opt": torch.optim.SGD(model.parameters(), lr=0.1), "step": 0}
    >>> print(run_state(run, streams=("torch",)))
    run state: 3 components (+1 global stream)
      run["model"]  module (Linear, 2 tensors; trained by run["opt"])
      run["opt"]    optimizer (SGD, 1 param group)
      run["step"]   counter (int 0)
      torch         global-rng (compared when a step draws from it)
    """

    components: tuple[Component, ...]
    streams: tuple[str, ...] = ()
    #: what :meth:`without` left out (paths and streams)
    left_out: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Component]:
        return iter(self.components)

    def __len__(self) -> int:
        return len(self.components)

    def __getitem__(self, path: str) -> Component:
        for c in self.components:
            if c.path == path:
                return c
        raise KeyError(path)

    @property
    def paths(self) -> list[str]:
        return [c.path for c in self.components]

    def of_kind(self, *kinds: str) -> list[Component]:
        return [c for c in self.components if c.kind in kinds]

    def without(self, ignore: tuple[str, ...]) -> "RunState":
        """This run state less the components and global streams ``ignore`` names (see :func:`ignored`)."""
        if not ignore:
            return self
        out = [c.path for c in self.components if ignored(c.path, ignore)]
        out += [s for s in self.streams if ignored(s, ignore)]
        return RunState(tuple(c for c in self.components if c.path not in out),
                        tuple(s for s in self.streams if s not in out), self.left_out + tuple(out))

    @property
    def bookkeeping(self) -> frozenset[str]:
        """The paths of the data pipeline's own bookkeeping (see :attr:`Component.bookkeeping`)."""
        return frozenset(c.path for c in self.components if c.bookkeeping)

    def kinds(self) -> dict[str, str]:
        """path -> kind, global streams included."""
        out = {c.path: c.kind for c in self.components}
        out.update({s: "global-rng" for s in self.streams})
        return out

    def trained_modules(self) -> list[Component]:
        """The top-level modules one of the run's optimizers trains (those a variation wraps)."""
        trained = {id(p) for opt in self.of_kind("optimizer") for p in optimizer_params(opt.obj)}
        return [c for c in self.of_kind("module")
                if any(id(p) in trained for p in c.obj.parameters())]

    def param_names(self) -> dict[int, str]:
        """``id(parameter)`` -> its name in the module that holds it (``body.0.weight``).

        With several modules trained, a name is prefixed by the module's place in the run.
        """
        modules = self.trained_modules() or self.of_kind("module")
        names: dict[int, str] = {}
        for c in modules:
            prefix = _short(c.path) + "." if len(modules) > 1 else ""
            for name, p in unwrap(c.obj).named_parameters(remove_duplicate=False):
                names.setdefault(id(p), prefix + name)
        return names

    def __str__(self) -> str:
        trained_by = _trained_by(self.components)
        rows = [(c.path, f"{c.kind} ({_about(c, trained_by)})") for c in self.components]
        rows += [(s, "global-rng (compared when a step draws from it)") for s in self.streams]
        width = max((len(p) for p, _ in rows), default=0)
        extra = f" (+{len(self.streams)} global stream{'s' if len(self.streams) != 1 else ''})" \
            if self.streams else ""
        head = f"run state: {len(self.components)} component{'s' if len(self.components) != 1 else ''}{extra}"
        return "\n".join([head] + [f"  {p.ljust(width)}  {k}" for p, k in rows])


def run_state(run: Any, *, streams: tuple[str, ...] | None = None) -> RunState:
    """The components the resume check finds in ``run``, each with its path and kind.

    ``streams``: the global random streams to list (default: those present here: python, numpy
    when installed, torch, cuda when available).

    >>> import torch, types
    >>> run = types.SimpleNamespace(model=torch.nn.Linear(2, 2), ema={"w": torch.zeros(2)}, epoch=0)
    >>> [(c.path, c.kind) for c in run_state(run)]
    [('run.model', 'module'), ('run.ema', 'tensors'), ('run.epoch', 'counter')]
    """
    found: list[Component] = []
    _walk(run, "run", None, None, "", 0, set(), found, rng_only=False, inner=False)
    module_tensors = {id(t) for c in found if c.kind == "module"
                      for t in (*c.obj.parameters(), *c.obj.buffers())}
    # a list of a module's own parameters is the module again, not more state
    found = [c for c in found if not (c.kind in ("tensor", "tensors") and _tensors_of(c.obj)
                                      and all(id(t) in module_tensors for t in _tensors_of(c.obj)))]
    order = {k: i for i, k in enumerate(KINDS)}
    found.sort(key=lambda c: order[c.kind])  # stable: the walk's order within a kind
    return RunState(tuple(found), available_streams() if streams is None else tuple(streams))


def ignored(path: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``path`` is one of ``patterns`` or lies inside one: ``*`` matches any run of characters,
    ``?`` one; brackets and quotes are themselves (``run["loader"]`` covers ``run["loader"].generator``).

    >>> ignored('run["loader"].generator', ('run["loader"]',)), ignored("run.it", ("run.*",))
    (True, True)
    >>> ignored("torch", ("run.*",)), ignored("run.items", ("run.it",))
    (False, False)
    """
    return any(_pattern(p).match(path) for p in patterns)


def _pattern(pattern: str) -> re.Pattern:
    body = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.compile(rf"{body}(?:$|[.\[])")


def available_streams() -> tuple[str, ...]:
    """The global random streams of this process: python, numpy (when installed), torch, cuda (when available)."""
    out = ["python"]
    if "numpy" in sys.modules or _installed("numpy"):
        out.append("numpy")
    out.append("torch")
    if torch.cuda.is_available():
        out.append("cuda")
    return tuple(out)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside torch.compile / DataParallel / DDP wrappers, at any nesting."""
    while True:
        inner = getattr(module, "_orig_mod", None)
        if isinstance(inner, torch.nn.Module):
            module = inner
            continue
        if type(module).__name__ in ("DistributedDataParallel", "DataParallel") and \
                isinstance(getattr(module, "module", None), torch.nn.Module):
            module = module.module
            continue
        return module


def _walk(obj, path, parent, key, access, depth, seen, found, *, rng_only, inner):
    """``inner``: ``obj`` is held by a data loader, sampler or iterator (its numbers are bookkeeping)."""
    def add(kind, bookkeeping=False):
        found.append(Component(path, kind, obj, parent, key, access, bookkeeping))

    if obj is None or isinstance(obj, (str, bytes, enum.Enum, os.PathLike, type, types.FunctionType,
                                       types.MethodType, types.ModuleType, types.BuiltinFunctionType)):
        return
    if isinstance(obj, (bool, int, float)):
        if not rng_only:
            add("counter", inner)
        return
    if id(obj) in seen or depth > MAX_DEPTH:
        return
    seen.add(id(obj))
    kind = _kind(obj)
    if kind is not None:
        if not rng_only or kind == "generator":
            # torch's DataLoader iterator has no state_dict: the check reads its batch count, bookkeeping
            add(kind, kind == "data" and not callable(getattr(obj, "state_dict", None)))
        if kind in ("data", "state"):
            # its state_dict is its state; only a generator it holds is a component of its own
            _walk_attributes(obj, path, depth, seen, found, rng_only=True, inner=True)
        return
    if depth > 0 and is_config(obj, key):
        if not rng_only:
            add("config")
        return
    if isinstance(obj, torch.Tensor) or is_ndarray(obj):
        if not rng_only:
            add("tensor", inner)
        return
    if isinstance(obj, torch.utils.data.DataLoader):
        for name in ("generator", "sampler", "batch_sampler"):
            _walk(getattr(obj, name, None), f"{path}.{name}", obj, name, "attr", depth + 1, seen, found,
                  rng_only=rng_only, inner=True)
        return
    if isinstance(obj, Mapping):
        if not rng_only and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            add("tensors", inner)
            return
        for k, v in list(obj.items())[:MAX_ITEMS]:
            if isinstance(k, (str, int)):
                where = f'{path}["{k}"]' if isinstance(k, str) else f"{path}[{k}]"
                _walk(v, where, obj, k, "item", depth + 1, seen, found, rng_only=rng_only, inner=inner)
        return
    if isinstance(obj, (list, tuple)):
        if not rng_only and obj and all(isinstance(v, torch.Tensor) for v in obj):
            add("tensors", inner)
            return
        if not rng_only and obj and all(isinstance(v, (bool, int, float)) for v in obj):
            add("counter", inner)  # a list of numbers (a loss history) is one piece of state
            return
        for i, v in enumerate(obj[:MAX_ITEMS]):
            _walk(v, f"{path}[{i}]", obj, i, "item", depth + 1, seen, found, rng_only=rng_only, inner=inner)
        return
    if isinstance(obj, torch.utils.data.Sampler) and _is_torch_internal(obj):
        # torch's samplers: their generator and epoch (DistributedSampler.set_epoch) are state; the rest is setup
        _walk_attributes(obj, path, depth, seen, found, rng_only=True, inner=True)
        epoch = getattr(obj, "epoch", None)
        if isinstance(epoch, int) and not rng_only:
            found.append(Component(f"{path}.epoch", "counter", epoch, obj, "epoch", "attr", True))
        return
    if _is_torch_internal(obj):
        return
    if isinstance(obj, torch.utils.data.Dataset):
        return  # data, not training state
    inner = inner or isinstance(obj, torch.utils.data.Sampler) or (
        depth > 0 and (hasattr(type(obj), "__next__") or hasattr(type(obj), "__iter__")))
    _walk_attributes(obj, path, depth, seen, found, rng_only=rng_only, inner=inner)


def _walk_attributes(obj, path, depth, seen, found, *, rng_only, inner):
    try:
        attrs = vars(obj)
    except TypeError:
        return
    for name, value in list(attrs.items()):
        if name.startswith("__") or name in DATA_ATTRIBUTES:
            continue
        _walk(value, f"{path}.{name}", obj, name, "attr", depth + 1, seen, found, rng_only=rng_only, inner=inner)


def is_config(obj: Any, key: Any = None) -> bool:
    """A config: a transformers ``PretrainedConfig``, or an object, dataclass or dict named like a config
    (``GPTConfig``, ``run.args``, ``run["model_args"]``) that holds only plain values.

    >>> import types
    >>> is_config(types.SimpleNamespace(lr=0.1, layers=2), "args"), is_config({"step": 3}, "state")
    (True, False)
    """
    if any(t.__name__ in CONFIG_CLASSES for t in type(obj).__mro__):
        return True
    named = CONFIG_NAME.search(type(obj).__name__) or (isinstance(key, str) and CONFIG_NAME.search(key))
    if not named or isinstance(obj, (list, tuple)):
        return False
    fields = config_fields(obj)
    return bool(fields) and all(_plain(v, 0) for v in fields.values())


def config_fields(obj: Any) -> dict[str, Any]:
    """A config's fields by name (``to_dict()`` for a transformers config)."""
    if any(t.__name__ in CONFIG_CLASSES for t in type(obj).__mro__) and callable(getattr(obj, "to_dict", None)):
        return dict(obj.to_dict())
    if isinstance(obj, Mapping):
        return {str(k): v for k, v in obj.items()}
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    try:
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    except TypeError:
        return {}


def _plain(value: Any, depth: int) -> bool:
    if value is None or isinstance(value, (str, bytes, bool, int, float, enum.Enum, os.PathLike, torch.dtype)):
        return True
    if depth < 3 and isinstance(value, (list, tuple, set, frozenset)):
        return all(_plain(v, depth + 1) for v in value)
    if depth < 3 and isinstance(value, Mapping):
        return all(_plain(v, depth + 1) for v in value.values())
    return False


def _kind(obj) -> str | None:
    if isinstance(obj, torch.nn.Module):
        return "module"
    if isinstance(obj, torch.optim.Optimizer):
        return "optimizer"
    sched = torch.optim.lr_scheduler
    if isinstance(obj, (sched.LRScheduler, getattr(sched, "ReduceLROnPlateau", sched.LRScheduler))):
        return "scheduler"
    if isinstance(obj, torch.amp.GradScaler):
        return "scaler"
    if isinstance(obj, (torch.Generator, random.Random)) or _is_numpy_rng(obj):
        return "generator"
    if any(t.__name__ == "_BaseDataLoaderIter" for t in type(obj).__mro__):
        return "data"  # torch's DataLoader iterator: its position is the number of batches yielded
    if callable(getattr(obj, "state_dict", None)) and not isinstance(obj, type):
        iterable = hasattr(obj, "__next__") or hasattr(obj, "__iter__") or isinstance(
            obj, (torch.utils.data.Sampler, torch.utils.data.DataLoader))
        return "data" if iterable else "state"
    return None


def _about(c: Component, trained_by: Mapping[int, list[str]]) -> str:
    obj, cls = c.obj, type(c.obj).__name__
    if c.kind == "module":
        inner = unwrap(obj)
        n = len(inner.state_dict())
        wrapped = f" in {cls}" if inner is not obj else ""
        by = trained_by.get(id(obj))
        return (f"{type(inner).__name__}{wrapped}, {n} tensor{'s' if n != 1 else ''}"
                + (f"; trained by {', '.join(by)}" if by else "; no optimizer trains it"))
    if c.kind == "optimizer":
        n = len(obj.param_groups)
        return f"{cls}, {n} param group{'s' if n != 1 else ''}"
    if c.kind == "tensors":
        return f"{len(obj)} tensors"
    if c.kind == "tensor":
        return f"{cls} {tuple(obj.shape)}"
    if c.kind == "counter":
        text = repr(obj)
        return f"{cls} {text if len(text) <= 20 else text[:17] + '...'}"
    if c.kind == "config":
        n = len(config_fields(obj))
        return f"{cls}, {n} field{'s' if n != 1 else ''}"
    return cls


def classes(rs: RunState) -> dict[str, str]:
    """path -> the class a person knows it by (a wrapped module by the class inside)."""
    return {c.path: type(unwrap(c.obj) if c.kind == "module" else c.obj).__name__ for c in rs}


def _trained_by(found) -> dict[int, list[str]]:
    owner: dict[int, list[str]] = {}
    by_param = {id(p): opt.path for opt in found if opt.kind == "optimizer" for p in optimizer_params(opt.obj)}
    for c in found:
        if c.kind == "module":
            paths = sorted({by_param[id(p)] for p in c.obj.parameters() if id(p) in by_param})
            if paths:
                owner[id(c.obj)] = paths
    return owner


def optimizer_params(optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _tensors_of(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    values = obj.values() if isinstance(obj, Mapping) else obj
    return [v for v in values if isinstance(v, torch.Tensor)]


def _short(path: str) -> str:
    # run.gen -> gen, run["gen"] -> gen: a readable prefix for parameter names
    tail = path[len("run"):].lstrip(".")
    return tail.replace('["', "").replace('"]', ".").replace("[", "").replace("]", ".").strip(".") or "run"


def _is_torch_internal(obj) -> bool:
    module = type(obj).__module__ or ""
    return module == "torch" or module.startswith("torch.")


def is_ndarray(obj) -> bool:
    """A numpy array (numpy never imported for the question: an array exists only if numpy is loaded)."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, np.ndarray)


def _is_numpy_rng(obj) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, (np.random.Generator, np.random.RandomState))


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
