"""The file boundaries of a save, traced in this process (no kill): torch's, safetensors' and Python's
writes, renames and removals, and a write outside the directory the save was given."""

from __future__ import annotations

import os

import torch
from torch import nn

from pytest_ckpt.processes.boundaries import Tracer
from tests.checks import crash_savers as savers


def _traced(root, fn):
    tracer = Tracer(root).install()
    try:
        fn()
    finally:
        tracer.uninstall()
    return [b.describe(root) for b in tracer.events]


def test_the_tracer_sees_torch_and_python_writes_renames_and_removals(tmp_path):
    model = nn.Linear(2, 2)

    def save():
        torch.save(model.state_dict(), tmp_path / "a.pt.tmp")
        os.replace(tmp_path / "a.pt.tmp", tmp_path / "a.pt")
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "note.txt").write_text("x")
        os.remove(tmp_path / "sub" / "note.txt")

    assert _traced(tmp_path, save) == [
        "killed before torch.save(.../a.pt.tmp)",
        "torn a.pt.tmp at 50%",
        "killed before os.replace(.../a.pt.tmp, .../a.pt)",
        "killed before os.mkdir(.../sub)",
        "killed before open(.../sub/note.txt)",
        "torn sub/note.txt at 50%",
        "killed before os.remove(.../sub/note.txt)",
    ]
    assert open is not None and os.replace.__module__ != __name__  # uninstalled: the real calls again
    assert os.replace.__name__ == "replace"


def test_the_tracer_names_a_write_outside_the_save_directory(tmp_path):
    (tmp_path / "given").mkdir()
    tracer = Tracer(tmp_path / "given").install()
    try:
        savers.save_in_place(nn.Linear(2, 2), tmp_path / "elsewhere.pt")
    finally:
        tracer.uninstall()
    assert tracer.outside == [f"torch.save({tmp_path / 'elsewhere.pt'})", f"write({tmp_path / 'elsewhere.pt'})"]


def test_the_tracer_sees_safetensors_rust_writer(tmp_path):
    assert _traced(tmp_path, lambda: savers.save_safetensors(nn.Linear(2, 2), tmp_path / "m.safetensors")) == [
        "killed before safetensors.torch.save_file(.../m.safetensors)", "torn m.safetensors at 50%"]
