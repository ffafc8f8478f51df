"""Target 2: schema of a 2 GiB torch zip checkpoint from metadata only, bytes read counted by the kernel."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import harness


def cases(path: Path) -> dict:
    import torch

    import pytest_ckpt as pc

    def ours():
        return pc.schema(path)

    def torch_meta():  # the cheapest torch.load can do: mapped, tensors on meta
        sd = torch.load(path, weights_only=True, mmap=True, map_location="meta")
        return {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}

    def torch_full():  # what most code does to look at a checkpoint
        sd = torch.load(path, weights_only=True)
        return {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}

    return {"pytest-ckpt": ours, "torch.load(mmap, meta)": torch_meta, "torch.load": torch_full}


def _bytes_read(args: list[str]) -> dict:
    """Evict the file from the page cache, then count what ``pc.schema`` makes the kernel read."""
    path = Path(args[0])
    import pytest_ckpt as pc

    pc.schema(path.with_name("warm.pt"))  # imports and first-call costs outside the count
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    before, status = harness.io_counters(), harness.proc_status()
    schema = pc.schema(path)
    after, status2 = harness.io_counters(), harness.proc_status()
    return {
        "rchar": after["rchar"] - before["rchar"],
        "read_bytes": after["read_bytes"] - before["read_bytes"],
        "rss_file": status2["RssFile"] - status["RssFile"],
        "tensors": len(schema),
    }


def run(work: Path, rounds: int) -> list[harness.Row]:
    import torch

    path = work / "model-2gib.pt"  # written by values.py
    torch.save({"w": torch.zeros(4)}, path.with_name("warm.pt"))
    size = os.path.getsize(path)
    timing = harness.interleaved(cases(path), rounds=rounds)
    io = harness.in_child(__file__, "bytes", str(path))
    ours = timing["pytest-ckpt"]
    peers = {k: harness.fmt(v.median, "s") for k, v in timing.items() if k != "pytest-ckpt"}
    return [
        harness.Row("2", f"`pc.schema(file.pt)`, {size / 2**30:.1f} GiB torch zip", ours.median, "s", 0.1,
                    peers=peers, spread=ours.spread),
        harness.Row("2", "bytes read by `pc.schema`, cache dropped", io["read_bytes"] + 0.0, "B", 1 << 20,
                    note=f"{io['rchar'] / 1024:.0f} KiB through read(), {io['read_bytes'] / 1024:.0f} KiB from "
                         f"storage, RssFile +{io['rss_file'] / 1024:.0f} KiB, of a {size / 2**30:.1f} GiB file"),
    ]


if __name__ == "__main__":
    harness.child_main({"bytes": _bytes_read})
