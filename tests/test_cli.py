"""The command line on real files: output, --json, exit codes 0/1/2."""

import json
import subprocess
import sys

import pytest
import torch

import pytest_ckpt as pc
from pytest_ckpt.cli import main
from tests.tinymodel import tiny


@pytest.fixture
def files(tmp_path):
    a = pc.save(tiny(4, seed=1), tmp_path / "a.safetensors")
    b = tmp_path / "b.pt"
    torch.save({"epoch": 1, "model": tiny(2, seed=1).state_dict()}, b)
    same = tmp_path / "same.pt"
    torch.save(tiny(4, seed=1).state_dict(), same)
    return a, b, same


def test_inspect(files, capsys):
    a, b, _ = files
    assert main(["inspect", str(b)]) == 0
    out = capsys.readouterr().out
    assert "located at: model" in out and "layers: 2" in out
    assert main(["inspect", str(a), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "safetensors" and info["tensors"] == len(tiny(4).state_dict())
    assert info["schema"]["embed.weight"] == {"shape": [32, 16], "dtype": "float32"}


def test_diff_exit_codes(files, capsys):
    a, b, same = files
    assert main(["diff", str(a), str(same)]) == 0
    assert "ok" in capsys.readouterr().out.lower()
    assert main(["diff", str(a), str(b)]) == 1
    assert "layers.2-3.*" in capsys.readouterr().out
    assert main(["diff", str(a), str(b), "--json", "--no-values"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert payload["ok"] is False and payload["missing"]


def test_verify_and_unreadable_input(files, tmp_path, capsys):
    a, _, _ = files
    assert main(["verify", str(a)]) == 0
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    assert main(["verify", str(bad)]) == 2
    assert "bad.pt" in capsys.readouterr().err
    assert main(["verify", str(bad), "--json"]) == 2
    payload = json.loads(capsys.readouterr().out)
    assert payload["ok"] is False and payload["path"].endswith("bad.pt")


def test_bad_usage_exits_2():
    proc = subprocess.run([sys.executable, "-m", "pytest_ckpt.cli", "frobnicate"], capture_output=True, text=True)
    assert proc.returncode == 2
    proc = subprocess.run([sys.executable, "-m", "pytest_ckpt.cli", "diff", "only-one"], capture_output=True, text=True)
    assert proc.returncode == 2
