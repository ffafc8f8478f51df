import pytest
import torch
from torch import nn

from pytest_ckpt.checkpoint import canonical


def names(*xs):
    return list(xs)


@pytest.mark.parametrize(
    "prefix, expected_stripped",
    [
        ("module.", ("module.",)),
        ("_orig_mod.", ("_orig_mod.",)),
        ("_fsdp_wrapped_module.", ("_fsdp_wrapped_module.",)),
        ("_checkpoint_wrapped_module.", ("_checkpoint_wrapped_module.",)),
        ("_orig_mod.module.", ("_orig_mod.", "module.")),
        ("module._orig_mod.", ("module.", "_orig_mod.")),
        ("module.module.", ("module.", "module.")),
    ],
)
def test_every_wrapper_prefix_and_combination_is_stripped_outermost_first(prefix, expected_stripped):
    raw = [prefix + "layers.0.weight", prefix + "layers.1.weight", prefix + "head.bias"]
    naming = canonical.best_naming(raw)
    assert naming.stripped == expected_stripped
    assert sorted(naming.names()) == ["head.bias", "layers.0.weight", "layers.1.weight"]


def test_prefix_carried_by_only_some_keys_is_kept():
    naming = canonical.best_naming(["module.w", "head.b"])
    assert naming.stripped == ()
    assert naming.names() == {"module.w", "head.b"}


@pytest.mark.parametrize("unprefixed", ["head.b", "zhead.b"], ids=["sorts-first", "sorts-last"])
def test_a_prefix_is_stripped_only_when_every_key_carries_it_wherever_the_others_sort(unprefixed):
    # the rule looks at the smallest and the largest name: an unprefixed name that sorts
    # after the prefixed ones ("zhead.b") must keep the prefix on as surely as one before it
    naming = canonical.best_naming(["module.w", unprefixed])
    assert naming.stripped == ()
    assert naming.names() == {"module.w", unprefixed}
    assert [n.stripped for n in canonical.namings(["module.w", unprefixed])] == [()]


def test_a_model_whose_own_child_is_called_module_is_not_mangled():
    # The target model really has a child named `module`: keep it.
    target = {"module.w", "module.b"}
    assert canonical.best_naming(["module.w", "module.b"], target).names() == target
    # Saved under DDP: one `module.` is a wrapper, the second is the model's own.
    naming = canonical.best_naming(["module.module.w", "module.module.b"], target)
    assert naming.names() == target
    assert naming.stripped == ("module.",)


def test_inner_reserved_segments_are_removed_wherever_they_appear():
    naming = canonical.best_naming([
        "layers.0._fsdp_wrapped_module._checkpoint_wrapped_module.weight",
        "layers.1._orig_mod.weight",
    ])
    assert naming.names() == {"layers.0.weight", "layers.1.weight"}
    assert set(naming.inner) == {"_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod."}


def test_foreign_common_prefix_is_removed_only_when_it_makes_names_match():
    target = {"layers.0.weight", "head.bias"}
    naming = canonical.best_naming(["model.layers.0.weight", "model.head.bias"], target)
    assert naming.names() == target and naming.foreign == ("model.",)
    # No target: nothing but wrappers is ever stripped.
    assert canonical.best_naming(["model.layers.0.weight", "model.head.bias"]).names() == {
        "model.layers.0.weight", "model.head.bias"}


def test_a_name_that_is_only_the_prefix_blocks_stripping():
    assert canonical.best_naming(["module.", "module.w"]).stripped == ()


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)


def test_live_wrappers_are_unwrapped_by_type():
    inner = Tiny()
    wrapped = nn.DataParallel(torch.compile(inner, backend="eager"))
    got, stripped = canonical.unwrap(wrapped)
    assert got is inner
    assert stripped == ("module.", "_orig_mod.")


def test_a_plain_module_with_a_child_named_module_is_not_unwrapped():
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = Tiny()

    holder = Holder()
    assert canonical.unwrap(holder) == (holder, ())


def test_attribute_prefix_only_when_it_makes_names_match():
    names = {"model.l1.weight", "model.l1.bias"}
    assert canonical.attribute_prefix(names, {"l1.weight", "l1.bias"}) == "model."
    # the target has a child of that name, and half the names would still match nothing
    assert canonical.attribute_prefix(names, {"l1.weight", "model.x"}) is None
    assert canonical.attribute_prefix(names, {"other.weight"}) is None  # matches nothing more
    assert canonical.attribute_prefix({"model.a", "net.b"}, {"a", "b"}) is None  # not one prefix
    assert canonical.attribute_prefix(names, set()) is None


def test_attribute_prefix_removed_when_the_targets_own_child_has_that_name_too():
    # a LightningModule's self.model holding a LlamaForCausalLM, read into the causal LM,
    # whose own child is called model: what decides is that the names then match
    target = {"model.embed.weight", "model.layers.0.w", "model.layers.1.w", "lm_head.weight"}
    saved = {"model." + n for n in target}
    assert canonical.attribute_prefix(saved, target) == "model."
    assert canonical.best_naming(sorted(saved), target).names() == target
    # a drift (a third block) still reads the names that match: the drift is the cause
    assert canonical.attribute_prefix(saved | {"model.model.layers.2.w"}, target) == "model."
    # most names still match nothing once it is removed: the names are read as they are
    assert canonical.attribute_prefix({"model.model.a", "model.model.b", "model.lm_head.weight"},
                                      target) is None


def test_attribute_prefix_carried_by_all_but_a_head():
    names = {"model.l1.weight", "model.norm.weight", "lm_head.weight"}
    assert canonical.attribute_prefix(names, {"l1.weight", "norm.weight"}) == "model."
    # stripping would give two names the same one: not an attribute prefix
    assert canonical.attribute_prefix({"model.a.w", "model.b.w", "a.w"}, {"a.w", "b.w"}) is None
    # carried by half the names only: not one prefix
    assert canonical.attribute_prefix({"model.a.w", "model.b.w", "x.w", "y.w"}, {"a.w", "b.w"}) is None


def test_attribute_prefix_added_when_the_target_holds_the_names_under_an_attribute():
    target = {"model.l1.weight", "model.norm.weight", "lm_head.weight"}
    assert canonical.attribute_prefix_added({"l1.weight", "norm.weight"}, target) == "model."
    assert canonical.attribute_prefix_added({"model.l1.weight"}, target) is None  # carried already
    assert canonical.attribute_prefix_added({"other.weight"}, target) is None  # matches nothing
    naming = canonical.best_naming(["l1.weight", "norm.weight"], target)
    assert naming.added == ("model.",) and naming.names() == {"model.l1.weight", "model.norm.weight"}
    # no target: nothing is ever added
    assert canonical.best_naming(["l1.weight", "norm.weight"]).identity
