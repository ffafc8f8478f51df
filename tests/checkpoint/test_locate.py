import torch

from pytest_ckpt.checkpoint import locate


def sd(n, size=2):
    return {f"layers.{i}.weight": torch.zeros(size) for i in range(n)}


def test_weights_are_found_at_any_depth_and_located_at_says_where():
    model = sd(4)
    opt = {"state": {0: {"exp_avg": torch.zeros(2), "exp_avg_sq": torch.zeros(2), "step": torch.tensor(1.0)}},
           "param_groups": [{"lr": 0.1, "params": [0]}]}
    tree = {"epoch": 3, "iter": 100, "trainer": {"var_wo_ddp": model, "var_opt": opt}, "args": {"lr": 0.1}}
    found = locate.candidates(tree)
    assert {c.path for c in found} == {("trainer", "var_wo_ddp"), ("trainer", "var_opt", "state", 0)}
    assert locate.choose(found).path == ("trainer", "var_wo_ddp")


def test_optimizer_state_ranks_last_even_with_more_tensors():
    tree = {"model": {"w": torch.zeros(1)},
            "opt": {"state": {0: {f"t{i}": torch.zeros(1) for i in range(9)}}}}
    assert locate.choose(locate.candidates(tree)).path == ("model",)


def test_without_a_score_most_tensors_then_most_bytes_wins():
    tree = {"a": sd(3, size=1), "b": sd(3, size=4), "c": sd(2, size=100)}
    assert locate.choose(locate.candidates(tree)).path == ("b",)


def test_score_picks_the_candidate_matching_the_target():
    tree = {"model": {"x.weight": torch.zeros(2)}, "ema": sd(5)}
    target = {"x.weight"}
    chosen = locate.choose(locate.candidates(tree), score=lambda c: len(set(c.tensors) & target))
    assert chosen.path == ("model",)


def test_lists_tuples_and_extra_state_are_walked():
    tree = [{"meta": "x"}, ({"w": torch.zeros(1), "blk._extra_state": b"opaque", "b": None},)]
    (found,) = locate.candidates(tree)
    assert found.path == (1, 0) and set(found.tensors) == {"w"}
    assert locate.format_path(found.path) == "[1][0]"
    assert locate.format_path(("trainer", "var_wo_ddp")) == "trainer.var_wo_ddp"


def test_a_cycle_does_not_hang():
    tree: dict = {"w": 1}
    tree["self"] = tree
    assert locate.candidates(tree) == []


# -- several models in one training state ------------------------------------------------

import pytest_ckpt as pc  # noqa: E402
from tests import varstate  # noqa: E402


def test_competing_models_are_named_with_how_to_choose(tmp_path):
    path = varstate.save(tmp_path / "ar-ckpt-last.pth")
    found = pc.inspect(path)
    # without a target the largest mapping wins: the frozen VAE, not the model being trained
    assert found.schema.located_at == ("trainer", "vae_local")
    (note,) = [n for n in found.notes if n.kind == "candidates"]
    assert note.info and note.text == (
        f"2 models in {path}: read trainer.vae_local (41 tensors, the most tensors), not "
        "trainer.var_wo_ddp (16 tensors); to read another, pass like= a model, checkpoint or "
        "schema snapshot shaped like it (pytest-ckpt inspect --like SOURCE)")
    # the RNG state and the optimizer's per-parameter state are no rivals
    assert "rng" not in note.text and "var_opt" not in note.text
    # like= chooses, everywhere: schema, inspect, load_state_dict, diff
    assert pc.schema(path, like=varstate.VAR(2)).located_at == ("trainer", "var_wo_ddp")
    chosen = pc.inspect(path, like=varstate.VAR(2))
    assert chosen.schema.located_at == ("trainer", "var_wo_ddp")
    assert not [n for n in chosen.notes if n.kind == "candidates"]
    assert set(pc.load_state_dict(path, like=varstate.VAR(2))) == set(varstate.VAR(2).state_dict())


def test_diff_locates_the_expected_side_with_like(tmp_path):
    # a depth change of the trained model, between two training states
    deeper = varstate.save(tmp_path / "depth3.pth", depth=3)
    old = varstate.save(tmp_path / "depth2.pth", depth=2)
    assert pc.diff(deeper, old, values=False).ok  # both read as the VAE: the change is invisible
    d = pc.diff(deeper, old, values=False, like=varstate.VAR(3))
    assert not d.ok and d.missing and all(n.startswith("blocks.2.") for n in d.missing)
    assert [n.kind for n in d.notes if not n.info] == ["layer-count"]


def test_one_model_beside_rng_state_is_not_a_competition():
    tree = {"model": sd(3), "rng": {"torch": torch.zeros(4), "cuda": torch.zeros(4)}}
    view = pc.inspect(tree)
    assert view.schema.located_at == ("model",)
    assert not [n for n in view.notes if n.kind == "candidates"]
