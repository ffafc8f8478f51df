"""Module-level factories the FSDP workers can import (tests of the launcher)."""

import os
import time

from torch import nn


def tiny():
    return nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))


def hangs():
    time.sleep(600)


def crashes_on_rank_1():
    if os.environ.get("RANK_HINT") == "1" or _rank() == 1:
        raise RuntimeError("rank 1 cannot build the model")
    time.sleep(600)  # rank 0 waits, as it would in a collective


def _rank():
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else -1


def torch_save_state_dict(model, path):
    """What a plain save does under FSDP2: each rank torch.saves its own DTensor state dict."""
    from pathlib import Path

    import torch
    import torch.distributed as dist

    Path(path).mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), Path(path) / f"rank{dist.get_rank()}.pt")


class OddTied(nn.Module):
    """What breaks resharding: rows that do not divide by 2 or 3, a tied head, buffers (one 0-dim)."""

    def __init__(self):
        import torch

        super().__init__()
        self.embed = nn.Embedding(7, 5)
        self.blocks = nn.ModuleList(nn.Linear(5, 5) for _ in range(2))
        self.odd = nn.Linear(5, 11)
        self.head = nn.Linear(5, 7, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 5))
        self.register_buffer("temperature", torch.tensor(0.7))


def odd_tied():
    return OddTied()


class ScalarParameter(nn.Module):
    def __init__(self):
        import torch

        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))  # CLIP's


def scalar_parameter():
    return ScalarParameter()


def save_model_only(model, path):
    """An FSDP2 project's save of the weights alone: each rank writes its shards with DCP."""
    import torch.distributed.checkpoint as dcp

    dcp.save(model.state_dict(), checkpoint_id=str(path))


def load_shards_last_rank_first(model, path):
    """A resharding load with the bug of Megatron-LM PR #63: it rebuilds each full tensor from the
    2 saved shards, concatenated in the wrong rank order, and hands it to the sharded model."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.tensor import DTensor, distribute_tensor

    state = model.state_dict()
    full = {k: torch.empty(v.shape, dtype=v.dtype) for k, v in state.items()}
    dcp.load(full, checkpoint_id=str(path))
    with torch.no_grad():
        for name, target in state.items():
            t = full[name]
            wrong = torch.cat(list(t.chunk(2))[::-1]) if t.dim() else t
            if isinstance(target, DTensor):
                target.to_local().copy_(distribute_tensor(wrong, target.device_mesh, target.placements).to_local())
            else:
                target.copy_(wrong)


def alive(pid: int) -> bool:
    """Is ``pid`` a live process (a zombie is dead)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def record_started(monkeypatch, module) -> list[int]:
    """The pids of the processes ``module.subprocess.Popen`` starts from now on."""
    started: list[int] = []
    real_popen = module.subprocess.Popen

    def popen(*args, **kw):
        proc = real_popen(*args, **kw)
        started.append(proc.pid)
        return proc

    monkeypatch.setattr(module.subprocess, "Popen", popen)
    return started


def save_with_code_in_metadata(model, path):
    """A DCP save whose ``.metadata`` pickle also holds an object that runs ``touch $PAYLOAD_MARKER``
    when unpickled (what a tampered or hostile checkpoint directory holds)."""
    import os
    import pickle

    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    dcp.save(model.state_dict(), checkpoint_id=str(path))
    if dist.get_rank() == 0:  # the coordinator wrote .metadata
        metadata_file = os.path.join(str(path), ".metadata")
        with open(metadata_file, "rb") as f:
            metadata = pickle.load(f)
        metadata.extra = _Payload(os.environ["PAYLOAD_MARKER"])
        with open(metadata_file, "wb") as f:
            pickle.dump(metadata, f)
    dist.barrier()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))
