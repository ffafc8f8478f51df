"""The strategies' own contract: valid configs, real mismatches, faithful mutations, small counterexamples."""

import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st

import pytest_ckpt as pc
from pytest_ckpt import strategies as cks
from pytest_ckpt.checkpoint.configs import config_fields_diff, config_to_dict
from pytest_ckpt.checkpoint.notes import NOTE_KINDS
from tests.strategies.families import FAMILY_NAMES, family
from tests.tinymodel import TinyConfig, TinyLM, tiny

# -- configs -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILY_NAMES)
@given(data=st.data())
def test_drawn_configs_build_tiny_models(name, data):
    fam = family(name)
    cfg = data.draw(cks.configs(fam.base))
    assert type(cfg) is type(fam.base)
    model = fam.meta(cfg)
    assert sum(t.numel() for t in model.state_dict().values()) < 200_000


@given(cfg=cks.configs({"n_layer": 12, "n_embd": 768, "n_head": 12, "activation": "gelu"}))
def test_dict_configs_stay_dicts_and_small_and_keep_other_fields(cfg):
    assert cfg["activation"] == "gelu"
    assert 1 <= cfg["n_layer"] <= 4 and cfg["n_embd"] % (2 * cfg["n_head"]) == 0


@given(cfg=cks.configs(TinyConfig(), num_hidden_layers=3, vocab_size=st.sampled_from([16, 48]),
                       intermediate_size=lambda c: st.just(4 * c["hidden_size"])))
def test_fields_pin_override_or_constrain(cfg):
    assert cfg.num_hidden_layers == 3 and cfg.vocab_size in (16, 48)
    assert cfg.intermediate_size == 4 * cfg.hidden_size


@dataclass
class _Attn:
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    hidden_size: int = 64
    num_experts: int = 8
    num_experts_per_tok: int = 2


@given(cfg=cks.configs(_Attn()))
def test_built_in_constraints_hold(cfg):
    assert cfg.num_attention_heads % cfg.num_key_value_heads == 0
    assert cfg.hidden_size % (2 * cfg.num_attention_heads) == 0
    assert cfg.num_experts_per_tok <= cfg.num_experts


def test_a_config_without_size_fields_is_refused():
    with pytest.raises(ValueError, match="no integer size field"):
        cks.mismatched_configs({"name": "x"}, lambda c: torch.nn.Linear(1, 1))


# -- mismatched configs ---------------------------------------------------------------------


@given(pair=cks.mismatched_configs(TinyConfig(), TinyLM))
def test_pairs_differ_in_schema_and_say_where(pair):
    a, b = pair  # unpacks like a tuple
    assert pair.a is a and pair.b is b
    assert pc.schema(TinyLM(a).to("meta")) != pc.schema(TinyLM(b).to("meta"))
    assert pair.changed == config_fields_diff(config_to_dict(a), config_to_dict(b)) != {}
    assert len(pair.changed) == 1  # one field at a time: a readable cause
    assert repr(pair).startswith("ConfigPair(TinyConfig(") and "->" in repr(pair)


def shrunk(strategy):
    """The counterexample hypothesis reports for a test that always fails."""
    seen = []

    @settings(database=None, derandomize=True, max_examples=20)
    @given(strategy)
    def always_fails(x):
        seen.append(x)
        raise AssertionError

    with pytest.raises(AssertionError):
        always_fails()
    return seen[-1]


def test_pairs_shrink_to_the_smallest_config():
    pair = shrunk(cks.mismatched_configs(TinyConfig(), TinyLM))
    assert pair.changed == {"num_hidden_layers": (1, 2)}
    assert pair.a == TinyConfig(num_hidden_layers=1, hidden_size=4, intermediate_size=2, vocab_size=8)


# -- mutations ------------------------------------------------------------------------------

SD = tiny(2).state_dict()


def _flat(tree, prefix=""):
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    if isinstance(tree, dict):
        return {n: t for k, v in tree.items() for n, t in _flat(v, f"{prefix}.{k}" if prefix else str(k)).items()}
    return {}


@given(m=cks.mutations(SD))
def test_mutations_leave_the_input_alone_and_change_what_they_say(m):
    snapshot = {k: v.clone() for k, v in SD.items()}
    assert m.kind in cks.MUTATION_KINDS and m.cause in NOTE_KINDS  # a kind reports can show
    assert all(torch.equal(SD[k], snapshot[k]) for k in SD)
    if m.undone:  # prefixed or nested: every tensor is there, under its name's last segments
        found = _flat(m.state_dict)
        for k, v in SD.items():
            assert any(n == k or n.endswith("." + k) and torch.equal(t, v) for n, t in found.items()), k
        return
    assert m.names
    new = m.state_dict
    if m.kind in ("drop", "truncate-tail"):
        assert not set(m.names) & set(new)
    elif m.kind == "rename":
        assert set(m.names) - set(new) and set(m.names) & set(new)
    else:
        old = m.names[0]  # the key drawn; a tie group drifts as one
        attr = {"reshape": "shape", "recast": "dtype"}.get(m.kind)
        if attr:
            assert getattr(new[old], attr) != getattr(SD[old], attr)
        else:
            assert not torch.equal(new[old], SD[old])


@pytest.mark.parametrize("kind", cks.MUTATION_KINDS)
def test_every_kind_is_drawn_alone(kind):
    m = find(cks.mutations(SD, kinds=(kind,)), lambda m: True)
    assert m.kind == kind


def test_perturb_shrinks_to_one_ulp_of_the_first_element():
    m = shrunk(cks.mutations(SD, kinds=("perturb",)))
    assert m.name == "embed.weight" and "(1 ulp)" in m.detail and m.detail.startswith("element 0")
    before, after = SD["embed.weight"].reshape(-1)[0], m.state_dict["embed.weight"].reshape(-1)[0]
    assert after != before and torch.nextafter(before, torch.tensor(0.0)) == after
    # the tied lm_head drifts with it: one parameter
    assert m.names == ("embed.weight", "lm_head.weight")
    assert m.state_dict["lm_head.weight"] is m.state_dict["embed.weight"]


def test_perturb_reaches_every_dtype_and_special_value():
    sd = {"nan": torch.tensor([float("nan")]), "inf": torch.tensor([float("inf")]),
          "zero": torch.tensor([-0.0]), "bf16": torch.ones(2, dtype=torch.bfloat16),
          "f8": torch.ones(2).to(torch.float8_e4m3fn), "int": torch.tensor([-128], dtype=torch.int8),
          "bool": torch.tensor([True]), "c": torch.ones(1, dtype=torch.complex64)}
    for name in sd:
        m = find(cks.mutations({name: sd[name], "other": torch.zeros(1)}, kinds=("perturb",)),
                 lambda m, name=name: m.name == name)
        assert m.check(pc.diff({name: sd[name]}, {name: m.state_dict[name]})) is None, m


def test_check_calls_a_false_pass_and_a_wrong_cause():
    m = find(cks.mutations(SD, kinds=("recast",)), lambda m: True)
    assert m.check(pc.diff(SD, SD)).startswith("false pass")
    assert "wrong cause" in m.check(pc.diff(SD, {**SD, m.name: SD[m.name] + 1}))
    assert repr(m) == f"Mutation('recast', 'embed.weight', {m.detail})"


# -- import hygiene -------------------------------------------------------------------------


def test_hypothesis_is_imported_only_by_the_strategies():
    code = ("import sys, pytest_ckpt as pc, pytest_ckpt.api, pytest_ckpt.cli;"
            "pc.diff({}, {}) if False else None;"
            "assert 'hypothesis' not in sys.modules, 'imported';"
            "from hypothesis import settings; before = settings.default;"
            "from pytest_ckpt import strategies;"
            "assert settings.default is before, 'settings changed'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_configs_of_a_projects_own_pretrained_config_vary_its_layers():
    # minimind's config: a dataclass under transformers 5 whose own fields are not declared
    pytest.importorskip("transformers")
    from tests.minimind_config import MiniMind, MiniMindConfig

    seen = set()

    @settings(max_examples=20, deadline=None, database=None)
    @given(cks.configs(MiniMindConfig()))
    def draw(cfg):
        assert isinstance(cfg, MiniMindConfig)
        seen.add(cfg.num_hidden_layers)

    draw()
    assert len(seen) > 1
    pair = find(cks.mismatched_configs(MiniMindConfig(), MiniMind), lambda p: True)
    assert set(pair.changed) <= {"num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size"}
