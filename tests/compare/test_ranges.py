"""Numbered blocks collapse into ranges."""

from pytest_ckpt.compare.ranges import block_counts, collapse, format_indices, split_block

SUFFIXES = ["attn.q.weight", "mlp.up.weight", "norm.weight"]


def layers(indices, suffixes=SUFFIXES, container="model.layers"):
    return [f"{container}.{i}.{s}" for i in indices for s in suffixes]


def test_format_indices():
    assert format_indices(range(8, 16)) == "8-15"
    assert format_indices([3]) == "3"
    assert format_indices([1, 3, 5, 6, 7]) == "{1,3,5-7}"
    assert format_indices([7, 5, 6, 6]) == "5-7"


def test_split_block():
    assert split_block("model.layers.8.mlp.up.weight") == ("model.layers", 8, "mlp.up.weight")
    assert split_block("0.weight") == ("", 0, "weight")
    assert split_block("lm_head.weight") is None
    assert split_block("a.b.7") is None  # a trailing number is a name, not a block


def test_whole_blocks_collapse_with_universe():
    universe = layers(range(16)) + ["lm_head.weight"]
    names = layers(range(8, 16))
    runs = collapse(names, universe)
    assert [r.display for r in runs] == ["model.layers.8-15.*"]
    assert runs[0].count == 8 and runs[0].whole and runs[0].container == "model.layers"
    assert set(runs[0].names) == set(names)


def test_gaps():
    runs = collapse(layers([1, 3, 5, 6, 7]), layers(range(8)))
    assert [r.display for r in runs] == ["model.layers.{1,3,5-7}.*"]


def test_partial_blocks_collapse_per_suffix():
    universe = layers(range(16))
    runs = collapse(layers(range(16), ["mlp.up.weight"]), universe)
    assert [r.display for r in runs] == ["model.layers.0-15.mlp.up.weight"]
    assert not runs[0].whole


def test_without_universe():
    runs = collapse(layers(range(4)) + ["lm_head.weight"])
    assert [r.display for r in runs] == ["lm_head.weight", "model.layers.0-3.*"]
    # a single suffix is not evidence of a whole block
    runs = collapse(layers(range(4), ["mlp.up.weight"]))
    assert [r.display for r in runs] == ["model.layers.0-3.mlp.up.weight"]


def test_mixed_whole_and_partial_and_plain():
    universe = layers(range(4)) + ["embed.weight"]
    names = layers([2, 3]) + layers([0], ["norm.weight"]) + ["embed.weight"]
    assert [r.display for r in collapse(names, universe)] == [
        "embed.weight", "model.layers.0.norm.weight", "model.layers.2-3.*"]


def test_sequential_container_and_natural_order():
    runs = collapse(["0.weight", "0.bias", "1.weight", "1.bias", "10.weight", "10.bias"])
    assert [r.display for r in runs] == ["{0-1,10}.*"]


def test_block_counts():
    names = layers(range(3)) + layers(range(2), container="enc.h") + ["x"]
    assert block_counts(names) == {"model.layers": [0, 1, 2], "enc.h": [0, 1]}


def test_top_level_blocks_of_a_sequential_have_no_leading_dot():
    import torch
    from torch import nn

    import pytest_ckpt as pc

    d = pc.diff(nn.Sequential(*[nn.Linear(2, 2) for _ in range(4)]),
                nn.Sequential(*[nn.Linear(2, 2) for _ in range(2)]).state_dict(), values=False)
    line = next(l for l in str(d).splitlines() if "[layer-count]" in l)
    assert "] 2-3.*: blocks 2-3 missing" in line


def test_index_blocks_matches_the_regex_on_every_name():
    # index_blocks runs the block regex on the first name of each run of sorted names only;
    # on any mix of odd names it must file every name exactly as the regex does one by one
    import random

    from pytest_ckpt.compare.ranges import _BLOCK, index_blocks

    def one_by_one(names):
        out = {}
        for name in names:
            m = _BLOCK.match(name)
            if m:
                out.setdefault(m.group(1) or "", {}).setdefault(int(m.group(2)), []).append(name)
        return {c: {i: sorted(v) for i, v in ix.items()} for c, ix in out.items()}

    odd = ["0.w", "0.", "0.x", "a.1.", "a.1.b", "a.1", "a.10.b", "a.1.2.c", "1.2.3", "x",
           "a.b.3.c", "a.b.3.", "a.b.3.d", "\0.1.w", "a.01.b", "a.1/x", "a.1.\n", "a.1-", "h.08.w"]
    rng = random.Random(0)
    for _ in range(3000):
        names = list({rng.choice(odd) for _ in range(8)})
        assert index_blocks(names) == one_by_one(names), names
    assert index_blocks(["h.8.w", "h.08.b"]) == {"h": {8: ["h.08.b", "h.8.w"]}}
