"""Model configs as plain dicts: convert, compare field by field, find the layer-count field."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch

from ..formats.jsonable import jsonable

__all__ = ["ABSENT", "CONFIG_KEYS", "LAYER_FIELDS", "VOLATILE_FIELDS", "DEFAULTED_FIELDS", "config_to_dict", "flatten",
           "config_fields_diff", "layer_field", "int_fields_equal", "module_config"]

#: names under which training code keeps a model's config: keys beside the weights in a training
#: state (nanoGPT's ``model_args``), attributes of a model (transformers' ``.config``, ``.cfg``)
CONFIG_KEYS = ("model_args", "model_config", "config", "hyper_parameters", "hparams", "cfg", "args")

#: names of the layer-count field, in the order they are looked for
LAYER_FIELDS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "depth")

#: fields that change with the environment, not the model: never a difference. Besides
#: provenance, transformers' ``architectures`` (set by save_pretrained/from_pretrained; the
#: heads' own tensors show a real change) and its runtime switches, which change neither
#: the weights nor what the model computes
VOLATILE_FIELDS = frozenset({
    "transformers_version", "_name_or_path", "_commit_hash",
    "_attn_implementation_autoset", "_attn_implementation", "_attn_implementation_internal",
    "architectures", "use_cache", "output_attentions", "output_hidden_states", "return_dict",
})

#: fields whose unset value (None, or absent) means "the default": a difference only
#: when both sides set them. transformers fills ``dtype`` in from the weights on
#: from_pretrained; a fresh config leaves it None (the tensors' dtypes are compared anyway)
DEFAULTED_FIELDS = frozenset({"dtype", "torch_dtype"})


class _Absent:
    """The value of a field one config does not have."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<absent>"

    def __bool__(self) -> bool:
        return False


ABSENT = _Absent()


def readable_config(cfg: Any) -> dict[str, Any] | None:
    """:func:`config_to_dict`, or ``None`` for no config or one that cannot be read as one.

    >>> readable_config(None), readable_config({"n_layer": 2})
    (None, {'n_layer': 2})
    """
    if cfg is None:
        return None
    try:
        return config_to_dict(cfg)
    except (TypeError, ValueError):
        return None


def module_config(module: Any) -> dict[str, Any] | None:
    """The config a model keeps as an attribute, as a dict: ``.config`` (transformers) as it is;
    else the first attribute named as in :data:`CONFIG_KEYS` (``.cfg``, ``.args``, ...), then the
    first dataclass or ``to_dict()`` attribute, that holds a layer-count field; else ``None``.

    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class Cfg:
    ...     n_layers: int = 2
    >>> class Net(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.cfg = Cfg()
    >>> module_config(Net())
    {'n_layers': 2}
    """
    found = readable_config(getattr(module, "config", None))
    if found is not None:
        return found
    named = [getattr(module, key, None) for key in CONFIG_KEYS if key != "config"]
    typed = [v for k, v in vars(module).items() if not k.startswith("_") and not isinstance(v, type)
             and (dataclasses.is_dataclass(v) or callable(getattr(v, "to_dict", None)))]
    for value in named + typed:
        if value is None or isinstance(value, (torch.Tensor, torch.nn.Module, str, bytes, int, float)):
            continue
        cfg = readable_config(value)
        if cfg and layer_field(cfg):
            return cfg
    return None


def config_to_dict(cfg: Any) -> dict[str, Any] | None:
    """A config (mapping, object with ``to_dict()``, dataclass, or plain object) as a JSON-ready dict.

    ``to_dict()`` comes before dataclass fields: a transformers 5 config is a dataclass
    whose declared fields leave out most of it. ``torch.dtype`` -> ``"float32"``,
    tuples -> lists, unknown values -> ``str`` (see :func:`~pytest_ckpt.formats.jsonable.jsonable`).

    >>> config_to_dict({"n_layer": 2, "dtype": torch.bfloat16, "dims": (4, 8)})
    {'n_layer': 2, 'dtype': 'bfloat16', 'dims': [4, 8]}
    """
    if cfg is None:
        return None
    if isinstance(cfg, Mapping):
        raw = dict(cfg)
    elif callable(getattr(cfg, "to_dict", None)) and not isinstance(cfg, type):
        raw = cfg.to_dict()
    elif dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        raw = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    elif hasattr(cfg, "__dict__") and not isinstance(cfg, type):
        raw = {k: v for k, v in vars(cfg).items() if not k.startswith("__")}
    else:
        raise TypeError(f"cannot read a config from {type(cfg).__name__}: "
                        "pass a dataclass, a dict, or an object with to_dict()")
    return {str(k): jsonable(v) for k, v in raw.items()}


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts flattened with dots: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_fields_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{field: (a value, b value)}`` for each field that differs, nested fields dotted.

    A field only one side has shows :data:`ABSENT` on the other. Volatile
    fields (:data:`VOLATILE_FIELDS`) are ignored, and so are :data:`DEFAULTED_FIELDS`
    that one side leaves unset.

    >>> config_fields_diff({"h": 64, "rope": {"theta": 1e4}}, {"h": 32, "rope": {"theta": 1e4}})
    {'h': (64, 32)}
    """
    fa, fb = flatten(a), flatten(b)
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(fa.keys() | fb.keys()):
        leaf = key.rsplit(".", 1)[-1]
        if leaf in VOLATILE_FIELDS:
            continue
        va, vb = fa.get(key, ABSENT), fb.get(key, ABSENT)
        if leaf in DEFAULTED_FIELDS and (va is ABSENT or vb is ABSENT or va is None or vb is None):
            continue
        if va is ABSENT or vb is ABSENT or not _same(va, vb):
            out[key] = (va, vb)
    return out


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; a config flipping a bool to an int is still a change
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def layer_field(cfg: Any) -> str | None:
    """The name of the layer-count field of ``cfg`` (dotted when nested), or ``None``.

    ``cfg`` is a dict or any config :func:`config_to_dict` reads. Top-level fields
    come first, in :data:`LAYER_FIELDS` order; then nested ones.

    >>> layer_field({"hidden_size": 64, "num_hidden_layers": 8})
    'num_hidden_layers'
    >>> layer_field({"text_config": {"n_layer": 4}})
    'text_config.n_layer'
    """
    if cfg is not None and not isinstance(cfg, Mapping):
        cfg = config_to_dict(cfg)
    if not cfg:
        return None
    for name in LAYER_FIELDS:
        if _is_int(cfg.get(name)):
            return name
    flat = flatten(cfg)
    for name in LAYER_FIELDS:
        for key, value in flat.items():
            if key.rsplit(".", 1)[-1] == name and _is_int(value):
                return key
    return None


def int_fields_equal(cfg: Mapping[str, Any] | None, value: int) -> list[str]:
    """The (dotted) integer fields of ``cfg`` whose value is ``value``, layer fields first."""
    if not cfg:
        return []
    flat = flatten(cfg)
    hits = [k for k, v in flat.items() if _is_int(v) and v == value]
    return sorted(hits, key=lambda k: (k.rsplit(".", 1)[-1] not in LAYER_FIELDS, k))


def shared_fields(given: dict[str, Any], recorded: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both configs cut to the fields both name and ``given`` sets: how a config is compared
    with a framework's record of it, which holds other fields (Lightning's hyper_parameters add
    training settings such as ``lr``; save_pretrained's config.json leaves out defaults and adds
    ``architectures``).

    >>> shared_fields({"hidden": 8, "dtype": None, "extra": 1}, {"hidden": 16, "lr": 0.1, "dtype": "float32"})
    ({'hidden': 8}, {'hidden': 16})
    """
    common = [k for k in given if k in recorded and given[k] is not None]
    return {k: given[k] for k in common}, {k: recorded[k] for k in common}
