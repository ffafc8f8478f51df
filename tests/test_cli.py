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


def test_diff_of_two_files_names_each_file_not_the_model(files, capsys):
    a, b, _ = files
    assert main(["diff", str(a), str(b), "--no-values"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == ("  [layer-count] layers.2-3.*: blocks 2-3 missing: the checkpoint a.safetensors "
                        "has 4 blocks, the checkpoint b.pt 2; num_hidden_layers: 2 -> 4")
    assert lines[0] == f"{b} differs from {a}: 14 missing (1 cause)"


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


def test_inspect_like_chooses_among_several_models(tmp_path, capsys):
    from tests import varstate

    state = varstate.save(tmp_path / "ar-ckpt-last.pth")
    assert main(["inspect", str(state)]) == 0
    out = capsys.readouterr().out
    assert "located at: trainer.vae_local" in out
    assert f"[candidates] 2 models in {state}: read trainer.vae_local" in out
    pc.save_schema(varstate.VAR(2), tmp_path / "var.json")
    assert main(["inspect", str(state), "--like", str(tmp_path / "var.json")]) == 0
    out = capsys.readouterr().out
    assert "located at: trainer.var_wo_ddp" in out and "blocks:     blocks: 2" in out
    assert "[candidates]" not in out
    deeper = varstate.save(tmp_path / "deeper.pth", depth=3)
    assert main(["diff", str(deeper), str(state), "--no-values"]) == 0  # both read as the VAE
    capsys.readouterr()
    assert main(["diff", str(deeper), str(state), "--no-values", "--like", str(tmp_path / "var.json")]) == 1
    assert "[layer-count] blocks.2.*" in capsys.readouterr().out


def test_version_top_level_blocks_and_a_note_said_once(tmp_path, capsys):
    import pytest_ckpt

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pytest-ckpt {pytest_ckpt.__version__}"
    a = tmp_path / "a.pt"
    torch.save({"epoch": 1, "model": torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)).state_dict()}, a)
    assert main(["inspect", str(a)]) == 0
    assert "  blocks:     2 at top level" in capsys.readouterr().out.splitlines()
    assert main(["diff", str(a), str(a)]) == 0
    out = capsys.readouterr().out
    assert out.count("[nested] weights found nested at model") == 1, out


def test_inspect_shows_the_config_pc_save_stored(tmp_path, capsys):
    path = pc.save(tiny(2), tmp_path / "cfg.safetensors", config=tiny(2).config)
    assert main(["inspect", str(path)]) == 0
    assert '  config:     {"dropout": 0.0, "hidden_size": 16, "intermediate_size": 32, ' \
           '"num_hidden_layers": 2, "vocab_size": 32}' in capsys.readouterr().out.splitlines()


def test_inspect_shows_a_config_kept_beside_the_weights(tmp_path, capsys):
    # nanoGPT's checkpoint: model_args (the model's config) beside the weights and the optimizer
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "optimizer": torch.optim.AdamW(model.parameters()).state_dict(),
                "model_args": {"n_layer": 2, "n_embd": 4, "bias": True}, "iter_num": 5,
                "config": {"batch_size": 12}}, path)
    assert main(["inspect", str(path)]) == 0
    assert '  config:     (at model_args) {"bias": true, "n_embd": 4, "n_layer": 2}' in \
        capsys.readouterr().out.splitlines()
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config_at"] == "model_args" and info["config"]["n_layer"] == 2
