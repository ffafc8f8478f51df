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
