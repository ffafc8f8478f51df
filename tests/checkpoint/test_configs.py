"""Configs as dicts, compared field by field, with the layer field found by name."""

import dataclasses
import json

import pytest
import torch

from pytest_ckpt.checkpoint.configs import (ABSENT, config_fields_diff, config_to_dict,
                                            int_fields_equal, layer_field, module_config)


@dataclasses.dataclass
class Cfg:
    hidden_size: int = 64
    num_hidden_layers: int = 8
    dtype: torch.dtype = torch.bfloat16
    dims: tuple = (1, 2)


class WithToDict:
    def to_dict(self):
        return {"n_layer": 4, "rope": {"theta": 1e4}}


def test_config_to_dict_kinds():
    assert config_to_dict(Cfg()) == {"hidden_size": 64, "num_hidden_layers": 8,
                                     "dtype": "bfloat16", "dims": [1, 2]}
    assert config_to_dict(WithToDict()) == {"n_layer": 4, "rope": {"theta": 1e4}}
    assert config_to_dict({"a": object}) == {"a": str(object)}
    assert config_to_dict(None) is None
    json.dumps(config_to_dict(Cfg()))
    with pytest.raises(TypeError):
        config_to_dict(3)


def test_transformers_config():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32)
    d = config_to_dict(cfg)
    json.dumps(d)
    assert layer_field(d) == "num_hidden_layers" and d["num_hidden_layers"] == 2


def test_fields_diff_flattens_and_ignores_volatile():
    a = {"hidden_size": 64, "rope": {"theta": 1e4, "type": "x"}, "transformers_version": "4.1",
         "_name_or_path": "a", "only_a": 1}
    b = {"hidden_size": 32, "rope": {"theta": 1e4, "type": "y"}, "transformers_version": "4.2",
         "_name_or_path": "b"}
    assert config_fields_diff(a, b) == {"hidden_size": (64, 32), "only_a": (1, ABSENT),
                                        "rope.type": ("x", "y")}
    assert config_fields_diff(a, a) == {}
    assert config_fields_diff({"f": True}, {"f": 1}) == {"f": (True, 1)}
    assert config_fields_diff({"f": 1}, {"f": 1.0}) == {}


@pytest.mark.parametrize("name", ["num_hidden_layers", "n_layer", "n_layers", "num_layers",
                                  "depth"])
def test_layer_field_by_name(name):
    assert layer_field({"hidden_size": 8, name: 3}) == name


def test_layer_field_nested_and_absent():
    assert layer_field({"text_config": {"num_layers": 2}}) == "text_config.num_layers"
    assert layer_field({"hidden_size": 8}) is None
    assert layer_field({"depth": True}) is None
    assert layer_field(None) is None


def test_int_fields_equal():
    assert int_fields_equal({"heads": 8, "depth": 8, "h": 64, "flag": True}, 8) == ["depth",
                                                                                    "heads"]


def test_provenance_runtime_switches_and_unset_dtype_are_no_difference():
    fresh = {"n_layer": 2, "architectures": None, "dtype": None, "use_cache": True,
             "sub": {"dtype": None, "return_dict": True}}
    pretrained = {"n_layer": 2, "architectures": ["GPT2LMHeadModel"], "dtype": "float32",
                  "use_cache": False, "sub": {"dtype": "bfloat16", "return_dict": False}}
    assert config_fields_diff(fresh, pretrained) == {}
    # a dtype both sides set is still compared; so is everything else
    assert config_fields_diff({"dtype": "float32", "n_layer": 2}, {"dtype": "bfloat16", "n_layer": 3}) == {
        "dtype": ("float32", "bfloat16"), "n_layer": (2, 3)}


@dataclasses.dataclass
class Small:
    n_layers: int = 3
    dim: int = 8


class Holder(torch.nn.Module):
    def __init__(self, **attrs):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)
        for name, value in attrs.items():
            setattr(self, name, value)


def test_a_models_config_is_found_by_more_names_than_config_and_by_type():
    assert module_config(Holder(cfg=Small())) == {"n_layers": 3, "dim": 8}
    assert module_config(Holder(args={"n_layer": 4, "lr": 0.1})) == {"n_layer": 4, "lr": 0.1}
    assert module_config(Holder(settings=Small(n_layers=5)))["n_layers"] == 5  # by type
    # .config wins, as it is; a name or type without a layer count is not taken for a config
    assert module_config(Holder(config={"hidden": 4}, cfg=Small())) == {"hidden": 4}
    assert module_config(Holder(args={"lr": 0.1}, opts=Small)) is None
    assert module_config(Holder()) is None
