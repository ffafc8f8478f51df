"""The weights_only migration: a file that needs data classes gets the exact line that allows them;
a file that asks for code stays ``unsafe``. Real torch.save files, nothing is ever run."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
import sys

import pytest
import torch

import pytest_ckpt as pc
from pytest_ckpt.cli import main
from pytest_ckpt.errors import CheckpointError
from pytest_ckpt.formats import safe_globals


class Mode(enum.Enum):
    TRAIN = "train"


@dataclasses.dataclass
class TrainConfig:
    layers: int = 2


class Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class Hook:
    """No data class: unpickling it runs its ``__setstate__``, which runs a command."""

    def __init__(self, target):
        self.target = str(target)

    def __setstate__(self, state):
        os.system(f"touch {state['target']}")


class NumpyLoad:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        import numpy

        return (numpy.load, (self.target, None, True))  # allow_pickle=True: it unpickles whatever it is given


@pytest.fixture
def restore_safe_globals():
    before = torch.serialization.get_safe_globals()
    yield
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(before)


def _refusal(path) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        pc.load_state_dict(path)
    return info.value


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_an_old_checkpoint_holding_a_namespace_gets_the_exact_line(tmp_path, legacy, restore_safe_globals):
    path = tmp_path / "old.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.1)}, path,
               _use_new_zipfile_serialization=not legacy)
    err = _refusal(path)
    assert err.kind == "needs-safe-globals" and err.globals == ("argparse.Namespace",)
    message = str(err)
    assert message.startswith(f"{path}: needs-safe-globals: ")
    assert "\n    import argparse\n    torch.serialization.add_safe_globals([argparse.Namespace])\n" in message
    assert "with torch.serialization.safe_globals([argparse.Namespace])" in message
    # the printed lines are the fix, as written
    exec(safe_globals.allow_line(err.globals), {"torch": torch})
    assert torch.equal(pc.load_state_dict(path)["w"], torch.ones(2))


def test_dataclasses_and_enums_are_data_and_the_context_allows_them(tmp_path):
    path = tmp_path / "cfg.pt"
    torch.save({"state_dict": {"w": torch.ones(2), "b": torch.zeros(1)}, "cfg": TrainConfig(), "mode": Mode.TRAIN}, path)
    err = _refusal(path)
    assert err.kind == "needs-safe-globals"
    assert set(err.globals) == {f"{__name__}.TrainConfig", f"{__name__}.Mode"}
    with torch.serialization.safe_globals([TrainConfig, Mode]):
        assert set(pc.load_state_dict(path)) == {"w", "b"}
    assert _refusal(path).kind == "needs-safe-globals"  # only for that load


def test_code_beside_a_data_class_stays_unsafe_and_runs_nothing(tmp_path):
    pwned = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "args": argparse.Namespace(), "x": Payload(pwned)}, path)
    err = _refusal(path)
    assert err.kind == "unsafe" and set(err.globals) == {"argparse.Namespace", "os.system"}
    assert "(os.system runs code)" in str(err) and "add_safe_globals" not in str(err)
    assert not pwned.exists()


def test_an_imported_class_that_is_no_data_class_stays_unsafe_and_runs_nothing(tmp_path):
    pwned = tmp_path / "pwned"
    path = tmp_path / "hook.pt"
    torch.save({"w": torch.ones(2), "h": Hook(pwned)}, path)
    err = _refusal(path)  # its module is imported: it is looked at, and it is no dataclass, enum or namedtuple
    assert err.kind == "unsafe" and err.globals == (f"{__name__}.Hook",)
    assert f"{__name__}.Hook could not be checked here" in str(err)
    assert not pwned.exists()


def test_a_numpy_function_is_code_not_data(tmp_path):
    path = tmp_path / "np.pt"
    torch.save({"w": torch.ones(2), "arrays": NumpyLoad(tmp_path / "other.npy")}, path)
    err = _refusal(path)
    assert err.kind == "unsafe" and err.globals == ("numpy.load",)
    assert "(numpy.load runs code)" in str(err) and "add_safe_globals" not in str(err)


def test_builtins_eval_is_code():
    assert safe_globals.classify("builtins.eval") == safe_globals.CODE
    assert safe_globals.classify("builtins.exec") == safe_globals.CODE
    assert safe_globals.classify("subprocess.Popen") == safe_globals.CODE
    assert safe_globals.classify("<unresolved STACK_GLOBAL>") == safe_globals.CODE


def test_a_class_of_a_module_not_imported_is_not_guessed(tmp_path, monkeypatch):
    (tmp_path / "p15_project_cfg.py").write_text("class Settings:\n    def __init__(self):\n        self.n = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import p15_project_cfg

    path = tmp_path / "proj.pt"
    torch.save({"w": torch.ones(2), "s": p15_project_cfg.Settings()}, path)
    monkeypatch.delitem(sys.modules, "p15_project_cfg")
    err = _refusal(path)
    assert err.kind == "unsafe" and "p15_project_cfg" not in sys.modules  # never imported
    assert "p15_project_cfg.Settings could not be checked here" in str(err)
    assert "torch.serialization.add_safe_globals([p15_project_cfg.Settings])" in str(err)


def test_inspect_lists_the_globals_a_file_needs(tmp_path, capsys):
    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(2), "args": argparse.Namespace(), "cfg": TrainConfig()}, path)
    assert main(["inspect", str(path), "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "needs-safe-globals"
    assert out["globals"] == ["argparse.Namespace", f"{__name__}.TrainConfig"]
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"torch.serialization.add_safe_globals([argparse.Namespace, {__name__}.TrainConfig])" in err
