"""Tie groups: names that are one tensor."""

import torch
from torch import nn

from pytest_ckpt.checkpoint.ties import module_tie_groups, storage_key, tie_groups


def test_tie_groups_by_storage_view():
    w = torch.randn(4, 3)
    other = torch.randn(4, 3)
    groups = tie_groups({"head.weight": w, "emb.weight": w, "x": other, "alias": w.view(4, 3),
                         "transposed": w.t(), "row": w[1]})
    # a view with another shape/stride/offset is not the same tensor
    assert groups == [("alias", "emb.weight", "head.weight")]


def test_meta_and_empty_never_grouped():
    m = torch.empty(3, device="meta")
    assert storage_key(m) is None
    assert tie_groups({"a": m, "b": m}) == []
    assert tie_groups({"a": torch.empty(0), "b": torch.empty(0)}) == []


def test_custom_key():
    tensors = {"a": torch.zeros(1), "b": torch.ones(1), "c": torch.zeros(2)}
    assert tie_groups(tensors, key=lambda t: t.numel()) == [("a", "b")]
    assert tie_groups(tensors, key=lambda t: None) == []


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.emb.weight
        self.register_buffer("scratch", torch.zeros(1), persistent=False)
        self.register_buffer("pos", torch.zeros(2))


def test_module_tie_groups():
    m = Tied()
    assert module_tie_groups(m) == [("emb.weight", "head.weight")]
    wrapped = nn.Sequential(m)
    assert module_tie_groups(wrapped, rename=lambda n: n.removeprefix("0.")) == [
        ("emb.weight", "head.weight")]
    assert module_tie_groups(nn.Linear(2, 2)) == []


def test_state_dict_of_tied_module_keeps_groups():
    assert tie_groups(Tied().state_dict()) == [("emb.weight", "head.weight")]
