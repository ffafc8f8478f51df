"""Detection power over real model families: every drift reported with its cause, no false alarm.

The checks live in :mod:`tests.strategies.verdicts`, shared with ``make detection``,
which runs the same properties thousands of times and prints the table.
"""

import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

import pytest_ckpt as pc
from pytest_ckpt import strategies as cks
from pytest_ckpt.checkpoint.configs import config_fields_diff, config_to_dict
from pytest_ckpt.checkpoint.ties import tie_groups as pc_tie_groups
from pytest_ckpt.strategies import ConfigPair, Mutation
from tests.strategies import verdicts
from tests.strategies.families import (FAMILY_NAMES, ROUTES, family, routes_for, with_fields,
                                       write)

pytestmark = pytest.mark.slow

families = pytest.mark.parametrize("name", FAMILY_NAMES)


@families
@given(data=st.data())
def test_every_drift_is_reported_with_its_cause(name, data):
    fam = family(name)
    cfg = data.draw(cks.configs(fam.base), label="config")
    model = fam.build(cfg)
    m = data.draw(cks.mutations(model.state_dict()), label="mutation")
    route = data.draw(st.sampled_from(routes_for(m.kind)), label="route")
    with tempfile.TemporaryDirectory() as tmp:
        source = write(route, m.state_dict, Path(tmp), config=cfg)
        problem = verdicts.drift(m, pc.diff(model, source), stored_config=route.startswith("pc.save"))
    assert problem is None, problem


@families
@given(data=st.data())
def test_mismatched_configs_are_reported_with_the_field(name, data):
    fam = family(name)
    pair = data.draw(cks.mismatched_configs(fam.base, fam.factory), label="pair")
    a, b = pair
    d = pc.diff(fam.meta(a), fam.meta(b), configs=(a, b))
    problem = verdicts.mismatch(pair, d)
    assert problem is None, problem


@families
@given(data=st.data())
def test_mismatched_configs_are_reported_from_a_saved_file(name, data):
    # the realistic flow: the model knows its config, pc.save stored the checkpoint's,
    # and loading compares schemas (the weights of two configs differ anyway)
    fam = family(name)
    pair = data.draw(cks.mismatched_configs(fam.base, fam.factory), label="pair")
    a, b = pair
    with tempfile.TemporaryDirectory() as tmp:
        path = pc.save(fam.build(b), Path(tmp) / "ckpt.safetensors", config=b)
        d = pc.load_into(fam.build(a), path, strict=False).diff
    problem = verdicts.mismatch(pair, d)
    assert problem is None, problem


@families
@given(data=st.data())
def test_schema_equivalent_configs_give_no_difference(name, data):
    fam = family(name)
    a = data.draw(cks.configs(fam.base), label="config")
    b = data.draw(verdicts.equivalent(fam, a), label="equivalent")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    with tempfile.TemporaryDirectory() as tmp:
        problem = verdicts.equivalence(fam, a, b, seed, Path(tmp))
    assert problem is None, problem


@families
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@given(data=st.data())
def test_model_round_trips_are_exact(name, suffix, data):
    fam = family(name)
    cfg = data.draw(cks.configs(fam.base), label="config")
    model = fam.build(cfg, seed=data.draw(st.integers(0, 2**16), label="seed"))
    with tempfile.TemporaryDirectory() as tmp:
        path = pc.save(model, Path(tmp) / f"ckpt{suffix}", config=cfg)
        assert pc.diff(model, path).ok
        fresh = fam.build(cfg, seed=1 << 20)
        report = pc.load_into(fresh, path, config=cfg)
        assert report.ok and pc.diff(model, fresh).ok


@pytest.mark.parametrize("writer", ["pc.save.pt", "pc.save.safetensors", "torch.save", "safetensors"])
@given(sd=cks.state_dicts())
def test_state_dict_round_trips_are_exact(writer, sd):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(writer, sd, Path(tmp))
        d = pc.diff(sd, path)
        assert d.ok, str(d)
        back = pc.load_state_dict(path)
        again = pc.diff(sd, back)
        if writer == "safetensors" and again.ties:
            # plain safetensors cannot store ties: what comes back is copies, broken ties their
            # only difference, each copy holding the tied tensor's exact values
            assert not (again.missing or again.unexpected or again.shape or again.dtype or again.values), str(again)
            assert {n for g in again.ties for n in g} <= {n for g in pc_tie_groups(sd) for n in g}
            assert all(torch.equal(back[n], sd[n]) for g in again.ties for n in g)
        else:
            assert again.ok, str(again)


# -- regressions the properties found, kept as examples -------------------------------------

TINY = family("tinylm")
TINY1 = TINY.build(with_fields(TINY.base, num_hidden_layers=1))


def renamed_everywhere(sd, old, new):
    """The rename drift of every name part ``old``, as :func:`cks.mutations` draws it."""
    out = {".".join(new if p == old else p for p in k.split(".")): v for k, v in sd.items()}
    names = tuple(k for k in sd if k not in out) + tuple(k for k in out if k not in sd)
    return Mutation("rename", next(iter(sd)), out, names, f"{old} -> {new} (everywhere)")


def drift_through(model, m, route):
    assume(route in routes_for(m.kind))
    with tempfile.TemporaryDirectory() as tmp:
        source = write(route, m.state_dict, Path(tmp), config=model.config)
        problem = verdicts.drift(m, pc.diff(model, source), stored_config=route.startswith("pc.save"))
    assert problem is None, problem


@given(m=cks.mutations(TINY1.state_dict()), route=st.sampled_from(ROUTES))
# a rename of every .weight in a 1-block model with a stored config read as an interrupted save
@example(m=renamed_everywhere(TINY1.state_dict(), "weight", "gamma"), route="pc.save.pt")
# the block container renamed (layers -> blocks): read as a save cut off before block 0
@example(m=renamed_everywhere(TINY1.state_dict(), "layers", "blocks"), route="pc.save.pt")
def test_tinylm_drifts_through_every_route(m, route):
    drift_through(TINY1, m, route)


LLAMA = family("llama")
LLAMA1 = LLAMA.build(with_fields(LLAMA.base, num_hidden_layers=1))


@given(m=cks.mutations(LLAMA1.state_dict()), route=st.sampled_from(ROUTES))
# every name renamed (Llama has no biases): read as a save cut off before block 0
@example(m=renamed_everywhere(LLAMA1.state_dict(), "weight", "gamma"), route="pc.save.pt")
def test_llama_drifts_through_every_route(m, route):
    drift_through(LLAMA1, m, route)


GPT2 = family("gpt2")
GPT2_1 = GPT2.build(with_fields(GPT2.base, n_layer=1))


def cut_after(sd, kept):
    """The truncate-tail drift keeping the first ``kept`` tensors, as :func:`cks.mutations` draws it."""
    keys = list(sd)
    out = {k: sd[k] for k in keys[:kept]}
    ties = {n: g for g in pc_tie_groups(sd) for n in g}
    lost = tuple(n for n in keys[kept:] if not set(ties.get(n, ())) & out.keys())
    return Mutation("truncate-tail", keys[kept], out, lost, f"the last {len(keys) - kept} absent")


@given(m=cks.mutations(GPT2_1.state_dict()), route=st.sampled_from(ROUTES))
# cut before the blocks (only the token embedding written): read as plain missing tensors
@example(m=cut_after(GPT2_1.state_dict(), 1), route="pc.save.pt")
def test_gpt2_drifts_through_every_route(m, route):
    drift_through(GPT2_1, m, route)


QWEN2 = family("qwen2")


def pair(fam, a_fields, b_fields):
    a, b = with_fields(fam.base, **a_fields), with_fields(fam.base, **b_fields)
    return ConfigPair(a, b, config_fields_diff(config_to_dict(a), config_to_dict(b)))


_SMALL_QWEN2 = dict(num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                    hidden_size=4, intermediate_size=2, vocab_size=8, max_position_embeddings=8)


@given(pair=cks.mismatched_configs(QWEN2.base, QWEN2.factory))
# head size = hidden / heads: k_proj shrinks as heads grow, not in proportion to any field
@example(pair=pair(QWEN2, _SMALL_QWEN2, {**_SMALL_QWEN2, "num_attention_heads": 1}))
def test_qwen2_mismatches_name_the_field(pair):
    a, b = pair
    problem = verdicts.mismatch(pair, pc.diff(QWEN2.meta(a), QWEN2.meta(b), configs=(a, b)))
    assert problem is None, problem
