"""A load's own error read as evidence: the keys torch and transformers name, and the model
that load built, rebuilt from them."""

import torch
from torch import nn

from pytest_ckpt.checkpoint.resolve import resolve
from pytest_ckpt.compare.compare import compare
from pytest_ckpt.compare.load_error import built_view, canonical_name, parse, shorten


def torch_error(model: nn.Module, state, strict=True) -> str:
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        return str(exc)
    raise AssertionError("the load did not raise")


class Net(nn.Module):
    def __init__(self, blocks=3, width=4, norm=False):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        if norm:
            self.norm = nn.BatchNorm1d(width)


def test_torch_missing_unexpected_and_sizes_are_read():
    error = parse(torch_error(Net(3), Net(4).state_dict()))
    assert error.model == "Net" and error.missing == []
    assert error.unexpected == ["blocks.3.weight", "blocks.3.bias"]
    error = parse(torch_error(Net(2, width=6), Net(2).state_dict(), strict=False))
    assert error.sizes_only
    assert error.shapes["blocks.0.weight"] == ((4, 4), (6, 6))


def test_transformers_loading_report_is_read_from_its_log():
    log = ("\x1b[1mQwen3ForCausalLM LOAD REPORT\x1b[0m from: /tmp/x\n"
           "Key | Status | \n"
           "model.layers.{0, 1}.mlp.up_proj.weight | \x1b[33mMISMATCH\x1b[0m | Reinit due to size "
           "mismatch - ckpt: torch.Size([64, 32]) vs model:torch.Size([48, 32])\n"
           "model.layers.{2...4}.mlp.down_proj.weight | UNEXPECTED | |\n")
    error = parse("You set `ignore_mismatched_sizes` to `False`, thus raising an error.", log)
    assert error.shapes == {f"model.layers.{i}.mlp.up_proj.weight": ((64, 32), (48, 32))
                            for i in (0, 1)}
    assert error.unexpected == [f"model.layers.{i}.mlp.down_proj.weight" for i in (2, 3, 4)]
    assert parse("CUDA out of memory", "") is None


def test_names_are_read_as_the_file_spells_them():
    known = {"blocks.0.weight"}
    assert canonical_name("module._orig_mod.blocks.0.weight", known) == "blocks.0.weight"
    assert canonical_name("epoch", known) == "epoch"


def test_the_model_the_load_built_is_rebuilt(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model": Net(4, norm=True).state_dict()}, path)
    file = resolve(path, values=False)
    # one block fewer, under DDP's prefix: every name missing, every stored one unexpected
    state = {f"module.{k}": v for k, v in Net(4, norm=True).state_dict().items()}
    error = parse(torch_error(Net(3, norm=True), state))
    built = built_view(error, file, label="the model your load built", noun="model your load built",
                       built="your load built")
    # BatchNorm fills a missing num_batches_tracked: torch never names it, the load has it
    assert "norm.num_batches_tracked" in built.schema
    d = compare(built, file)
    assert [n.kind for n in d.notes if not n.info] == ["layer-count"]
    cause = next(n for n in d.notes if not n.info)
    assert cause.text == "blocks.3.*: 1 block unexpected: the checkpoint has 4 blocks, your load built 3"


def test_long_lists_and_repeated_lines_are_cut():
    text = torch_error(Net(8, width=6), Net(12).state_dict(), strict=True)
    short = shorten(text)
    assert len(short.splitlines()) == 6  # the header, the unexpected keys, 3 of 16 sizes, the rest
    assert '"blocks.8.weight", "blocks.8.bias", "blocks.9.weight", ... (8 keys: blocks.8-11.*)' in short
    assert short.endswith("... and 13 more size mismatches (blocks.1.bias, blocks.2-7.*)")
