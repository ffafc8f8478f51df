"""gc_paused: the cyclic collector is off inside the library's calls and back on after them."""

import gc
from collections.abc import Mapping

import pytest
import torch

import pytest_ckpt as pc
from pytest_ckpt.errors import CheckpointError
from pytest_ckpt.api import gc_paused


class Recording(Mapping):
    """A state dict that notes whether the collector ran while it was read."""

    def __init__(self, tensors):
        self.tensors, self.seen = tensors, []

    def __getitem__(self, key):
        return self.tensors[key]

    def __iter__(self):
        self.seen.append(gc.isenabled())
        return iter(self.tensors)

    def __len__(self):
        return len(self.tensors)


def test_paused_inside_and_restored_after_return_and_raise():
    @gc_paused
    def boom():
        assert not gc.isenabled()
        raise KeyError("x")

    with pytest.raises(KeyError):
        boom()
    assert gc.isenabled()


def test_left_off_when_the_caller_turned_it_off():
    gc.disable()
    try:
        assert gc_paused(gc.isenabled)() is False
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_library_calls_read_with_the_collector_paused(tmp_path):
    sd = Recording({"w": torch.zeros(2)})
    assert pc.diff(sd, {"w": torch.zeros(2)}).ok
    assert sd.seen and not any(sd.seen) and gc.isenabled()
    with pytest.raises(CheckpointError):
        pc.diff(sd, tmp_path / "absent.pt")
    assert gc.isenabled()
