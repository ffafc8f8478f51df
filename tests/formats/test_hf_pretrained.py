"""A save_pretrained directory is read only when the files from_pretrained opens beside the weights
are whole: every reader refuses what verify refuses there (a torn or absent config.json, a torn
generation_config.json), naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import pytest_ckpt as pc
from tests.strategies import fuzz



@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hf") / "pristine"
    fuzz.tiny_gpt2(0).save_pretrained(path, max_shard_size="2KB")
    return path


@pytest.fixture(scope="module")
def saved(pretrained) -> dict:
    return pc.load_state_dict(pretrained)


def damaged(pretrained: Path, tmp_path: Path, name: str, cut: int | None) -> Path:
    """A copy of the directory with ``name`` cut to ``cut`` bytes (``None``: removed)."""
    path = tmp_path / "ckpt"
    shutil.copytree(pretrained, path)
    if cut is None:
        (path / name).unlink()
    else:
        (path / name).write_bytes((path / name).read_bytes()[:cut])
    return path


def every_reader_refuses(path: Path, saved: dict, name: str, phrase: str) -> None:
    readers = {"verify": pc.verify, "schema": pc.schema, "load_state_dict": pc.load_state_dict,
               "diff": lambda p: pc.diff(saved, p)}
    for reader, call in readers.items():
        with pytest.raises(pc.CheckpointError) as info:
            call(path)
        assert info.value.kind == "incomplete" and info.value.path == str(path / name), f"{reader}: {info.value}"
        assert phrase in info.value.cause, f"{reader}: {info.value}"


def test_a_whole_directory_is_read(pretrained, saved):
    pc.verify(pretrained)
    assert "transformer.h.1.mlp.c_fc.weight" in saved and pc.diff(saved, pretrained).ok


@pytest.mark.parametrize("cut", [0, 40])
def test_a_torn_config_json_is_refused_by_every_reader(pretrained, saved, tmp_path, cut):
    path = damaged(pretrained, tmp_path, "config.json", cut)
    every_reader_refuses(path, saved, "config.json", "config.json is not valid JSON")
    every_reader_refuses(path, saved, "config.json", "from_pretrained fails on it")


def test_a_torn_generation_config_is_refused_by_every_reader_saying_what_from_pretrained_does(
        pretrained, saved, tmp_path):
    path = damaged(pretrained, tmp_path, "generation_config.json", 30)
    every_reader_refuses(path, saved, "generation_config.json",
                         "from_pretrained builds generation settings from config.json in its place, silently")


def test_a_config_json_absent_beside_generation_config_is_incomplete(pretrained, saved, tmp_path):
    path = damaged(pretrained, tmp_path, "config.json", None)
    every_reader_refuses(path, saved, "config.json", "config.json is absent beside generation_config.json, "
                                                     "which save_pretrained writes after it")


def test_a_removed_generation_config_leaves_what_from_pretrained_reads_whole(pretrained, saved, tmp_path):
    path = damaged(pretrained, tmp_path, "generation_config.json", None)
    pc.verify(path)
    assert pc.diff(saved, path).ok
