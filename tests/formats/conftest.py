"""Real checkpoint files for the format tests: written by torch.save, safetensors and DCP."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch


def sample_state() -> dict[str, torch.Tensor]:
    """A small state dict covering dtypes, 0-dim, empty and a tie."""
    g = torch.Generator().manual_seed(0)
    sd = {
        "embed.weight": torch.randn(8, 4, generator=g),
        "layers.0.w": torch.randn(4, 4, generator=g).to(torch.bfloat16),
        "layers.0.b": torch.randn(4, generator=g).half(),
        "count": torch.tensor(7, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "f8": torch.randn(5, generator=g).to(torch.float8_e4m3fn),
        "u8": torch.arange(6, dtype=torch.uint8),
    }
    sd["lm_head.weight"] = sd["embed.weight"]
    return sd


def assert_same_tensors(a: dict, b: dict) -> None:
    assert list(a) == list(b) or sorted(a) == sorted(b)
    for k in a:
        x, y = a[k], b[k]
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert torch.equal(x.view(torch.uint8) if x.dtype.is_floating_point and x.dtype.itemsize == 1 else x,
                           y.view(torch.uint8) if y.dtype.is_floating_point and y.dtype.itemsize == 1 else y), k


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    return sample_state()


@pytest.fixture
def torch_zip(tmp_path: Path, state) -> Path:
    p = tmp_path / "model.pt"
    torch.save(state, p)
    return p


@pytest.fixture
def torch_legacy(tmp_path: Path, state) -> Path:
    p = tmp_path / "legacy.pt"
    del state["f8"]  # torch cannot load float8 from the legacy format (UntypedStorage has no dtype)
    torch.save(state, p, _use_new_zipfile_serialization=False)
    return p


@pytest.fixture
def safetensors_file(tmp_path: Path, state) -> Path:
    from safetensors.torch import save_file

    p = tmp_path / "model.safetensors"
    sd = {k: v for k, v in state.items() if k != "lm_head.weight"}
    save_file(sd, str(p), metadata={"format": "pt"})
    return p


def write_dcp(path: Path, tree: dict) -> Path:
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(tree, storage_writer=dcp.FileSystemWriter(str(path)), no_dist=True)
    return path


@pytest.fixture
def dcp_dir(tmp_path: Path, state) -> Path:
    tree = {"model": {k: v.clone() for k, v in state.items() if k not in ("lm_head.weight", "f8")},
            "step": 12, "history": [1.5, 2.5]}
    return write_dcp(tmp_path / "dcp", tree)


@pytest.fixture
def same():
    """``same(expected, actual)``: asserts equal names, shapes, dtypes and bytes."""
    return assert_same_tensors


@pytest.fixture
def make_dcp():
    """``make_dcp(path, tree)``: a real DCP save in this process."""
    return write_dcp
