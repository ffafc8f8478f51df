"""A launched world: pytest itself started by ``torchrun`` (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``
set), every rank running the same tests in the same order.

The rank variations then run on that world instead of spawning ranks: NCCL when CUDA is present,
gloo otherwise (:func:`backend` says which ran). Object collectives (a shared directory, each rank's
outcome) go through a gloo group, which works under either backend. Torch-free at import: the
plugin asks :func:`launched` at start-up.

A variation that needs fewer ranks than the world (``reshard-1`` loads on 1, ``reshard-3`` saves on 2
of 3) runs on the world's first ranks, :func:`part`: while the project's code runs there, that group
is those ranks' default group, so code written for "every rank of the world" (``dcp.save`` without
a ``process_group``, ``init_device_mesh`` of the world size) runs on exactly those ranks; the other
ranks wait for the outcome.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Mapping

ENV_KEYS = ("WORLD_SIZE", "RANK", "MASTER_ADDR")
#: seconds the ranks have to meet at the first check that needs the world (env overrides)
ENV_RENDEZVOUS_TIMEOUT = "PYTEST_CKPT_RENDEZVOUS_TIMEOUT"
DEFAULT_RENDEZVOUS_TIMEOUT = 30.0

_objects: Any = None  # the gloo group for object collectives, once the world is joined
_parts: dict[int, Any] = {}  # the groups of the world's first k ranks, by k
_forgotten = 0  # how many of them a failed job has retired
_unreachable: str | None = None  # why the world could not be joined: said again at once, never waited for twice


class WorldUnreachable(RuntimeError):
    """The environment says this process is one rank of a torchrun world, and the other ranks did not
    meet it (a shell inside a torchrun job, a PyTorchJob pod): a usage error, naming the variables."""


def launched() -> bool:
    """True when this process is one rank of a world of 2 or more started by torchrun."""
    if not all(os.environ.get(k) for k in ENV_KEYS):
        return False
    try:
        return int(os.environ["WORLD_SIZE"]) > 1
    except ValueError:
        return False


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def backend() -> str:
    """``nccl`` when CUDA is present, ``gloo`` otherwise."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def device_type() -> str:
    return "cuda" if backend() == "nccl" else "cpu"


def joined() -> bool:
    """Whether this process has joined the launched world: a check needed it. Until then nothing
    waits for the other ranks, so a suite that uses no distributed variation never does."""
    return _objects is not None


def rendezvous_timeout() -> float:
    """Seconds the ranks have to meet: env ``PYTEST_CKPT_RENDEZVOUS_TIMEOUT``, else 30."""
    try:
        seconds = float(os.environ.get(ENV_RENDEZVOUS_TIMEOUT, ""))
    except ValueError:
        return DEFAULT_RENDEZVOUS_TIMEOUT
    return seconds if seconds > 0 else DEFAULT_RENDEZVOUS_TIMEOUT


def ensure(timeout_s: float = 180.0) -> None:
    """Join the world once per process (``env://``); later calls reuse it. The ranks must meet within
    :func:`rendezvous_timeout`, else :class:`WorldUnreachable` (then at once on every later call);
    their collectives may take ``timeout_s``."""
    global _objects
    import torch
    import torch.distributed as dist

    if _unreachable is not None:
        raise WorldUnreachable(_unreachable)
    if not dist.is_initialized():
        if backend() == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        _meet(timeout_s)
    if _objects is None:
        # its own group, also under gloo: a rank that agrees on an outcome while another is still in
        # the project's collectives must not meet them on the same group
        _objects = dist.new_group(backend="gloo")


def _meet(timeout_s: float) -> None:
    """``init_process_group`` bounded by the rendezvous timeout (gloo connects every rank as it
    starts), then the collectives' own ``timeout_s``."""
    global _unreachable
    import torch.distributed as dist

    wait = rendezvous_timeout()
    try:
        # with CUDA: NCCL for CUDA tensors, gloo for CPU ones (a ddp round trip of a CPU model, the
        # objects DCP gathers), on one group
        dist.init_process_group("cpu:gloo,cuda:nccl" if backend() == "nccl" else "gloo",
                                timeout=timedelta(seconds=wait))
    except Exception as exc:  # noqa: BLE001 - a missing peer surfaces as any of several store errors
        _unreachable = unreachable(exc, wait)
        raise WorldUnreachable(_unreachable) from None
    try:  # met: the store (new groups meet there) and the collectives get the long timeout back
        from torch.distributed.distributed_c10d import _get_default_store, _set_pg_timeout

        _get_default_store().set_timeout(timedelta(seconds=timeout_s))
        _set_pg_timeout(timedelta(seconds=timeout_s), None)
    except (ImportError, AttributeError, AssertionError, RuntimeError, ValueError):  # an older torch: the short one stays
        pass


def unreachable(exc: BaseException, wait: float, env: Mapping[str, str] = os.environ) -> str:
    """Why the world could not be joined, naming the variables that say there is one.

    >>> env = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    >>> print(unreachable(TimeoutError("Socket Timeout"), 30, env))  # doctest: +NORMALIZE_WHITESPACE
    pytest-ckpt: WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 say this pytest is rank 0 of a
    torchrun world of 2, but the other ranks did not meet it within 30s (TimeoutError: Socket Timeout):
    run the same pytest on every rank (torchrun --nproc-per-node 2 -m pytest -p no:xdist), or unset
    WORLD_SIZE, RANK and MASTER_ADDR to run it alone (PYTEST_CKPT_RENDEZVOUS_TIMEOUT=seconds gives the
    ranks longer to meet)
    """
    said = " ".join(f"{k}={env[k]}" for k in (*ENV_KEYS, "MASTER_PORT") if k in env)
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    world = env.get("WORLD_SIZE", "?")
    return (f"pytest-ckpt: {said} say this pytest is rank {env.get('RANK', '?')} of a torchrun world of {world}, "
            f"but the other ranks did not meet it within {wait:g}s ({type(exc).__name__}: {first}): run the same "
            f"pytest on every rank (torchrun --nproc-per-node {world} -m pytest -p no:xdist), or unset "
            f"{', '.join(ENV_KEYS[:-1])} and {ENV_KEYS[-1]} to run it alone ({ENV_RENDEZVOUS_TIMEOUT}=seconds "
            "gives the ranks longer to meet)")


def gather(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (every rank must call this at the same point)."""
    import torch.distributed as dist

    ensure()
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_objects)
    return out


def shared(directory: Path) -> Path:
    """Rank 0's ``directory`` on every rank (created), where the ranks write one checkpoint together.
    Needs a file system every rank sees: one node, or a shared mount."""
    chosen = Path(gather(str(directory))[0])
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


def part(k: int, timeout_s: float = 180.0) -> Any:
    """The group of the world's ranks ``0 .. k-1`` (all of them for ``k == size()``), created once and
    reused, its collectives bounded by ``timeout_s``. Every rank must call this at the same point
    (creating a group is a collective of the world). A job runs on its own group, never on the
    world's default one: a job that failed on one rank can leave the others mid-collective, and
    only its own group is left out of step (:func:`forget` drops it)."""
    import torch.distributed as dist

    ensure()
    if k not in _parts:
        _parts[k] = dist.new_group(list(range(k)), timeout=timedelta(seconds=timeout_s))
    return _parts[k]


def forget(k: int) -> None:
    """After a job on :func:`part` ``(k)`` failed (every rank calls this, having agreed it failed): that
    group may be out of step, so the next job gets a new one."""
    import torch.distributed as dist

    global _forgotten
    group = _parts.pop(k, None)
    _forgotten += 1
    if group is not None and dist.get_rank() < k:
        try:
            dist.destroy_process_group(group)
        except Exception:  # noqa: BLE001 - a group left broken is still dropped
            pass


def mesh_names(size: int) -> tuple[str, ...] | None:
    """The dimension name of a device mesh made on :func:`part` ``(size)``: new with each group. DTensor
    caches its plans by mesh, and two meshes of the same ranks are equal unless their names differ:
    a mesh on a retired group would otherwise come back from that cache. ``None`` spawned."""
    return (f"world{size}_{_forgotten}",) if launched() else None


@contextmanager
def as_world(group: Any) -> Iterator[None]:
    """On a rank of ``group``: that group is the default one for the duration (``get_world_size()``,
    collectives without a group, ``init_device_mesh``), then the world again. The group's ranks are
    the world's first ones, so a rank's number is the same in both."""
    import torch.distributed as dist
    from torch.distributed import distributed_c10d as c10d

    world_group = dist.group.WORLD
    try:
        c10d._world.default_pg = group
    except AttributeError as exc:  # a torch without the setter: say so rather than run on the world
        raise RuntimeError(f"this torch ({exc}) cannot run {group.size()} of the world's ranks as "
                           "their own world") from None
    try:
        yield
    finally:
        c10d._world.default_pg = world_group


def group_count() -> int:
    """How many unnamed groups this rank has created (torch names the next one by it)."""
    from torch.distributed import distributed_c10d as c10d

    return int(getattr(c10d._world, "group_count", 0))


def align_group_count(counts: list[int]) -> None:
    """After the world's first ranks ran code that may create groups: every rank counts on from the
    same number, so the world's next group has one name on every rank."""
    from torch.distributed import distributed_c10d as c10d

    if hasattr(c10d._world, "group_count"):
        c10d._world.group_count = max(counts)
