"""Configs drawn like a base config, and pairs of them whose models differ in schema."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ..checkpoint.configs import LAYER_FIELDS, config_fields_diff, config_to_dict

__all__ = ["SIZE_FIELDS", "ConfigPair", "configs", "mismatched_configs"]

#: what each integer size field is, by name; drawn in this order, so later roles can
#: depend on earlier ones (kv heads divide heads, hidden is a multiple of heads)
SIZE_FIELDS: dict[str, tuple[str, ...]] = {
    "layers": LAYER_FIELDS,
    "experts": ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"),
    "experts_per_token": ("num_experts_per_tok", "moe_topk"),
    "heads": ("num_attention_heads", "n_head", "n_heads", "num_heads"),
    "kv_heads": ("num_key_value_heads", "n_kv_heads", "num_kv_heads"),
    "head_dim": ("head_dim",),
    "hidden": ("hidden_size", "n_embd", "d_model", "dim", "embed_dim"),
    "intermediate": ("intermediate_size", "n_inner", "ffn_dim", "d_ff", "moe_intermediate_size"),
    "vocab": ("vocab_size",),
    "positions": ("max_position_embeddings", "n_positions", "n_ctx"),
}

Values = dict[str, Any]


@dataclass(frozen=True)
class _Field:
    """How one field is drawn: ``make(values drawn so far)`` gives its strategy.

    ``valid`` (built-in roles only) says whether a value still fits the other
    values, so a mismatched pair changes one field and keeps the config valid;
    a user's callable field may depend on anything and is drawn again instead.
    """

    name: str
    make: Callable[[Values], Any]
    valid: Callable[[Values, Any], bool] | None = None
    depends: bool = False


class ConfigPair(tuple):
    """``(a, b)``: two configs whose models' schemas differ; ``changed`` says where.

    ``changed`` maps each differing config field (dotted when nested) to
    ``(a value, b value)``, as :func:`pytest_ckpt.checkpoint.configs.config_fields_diff`
    sees it, so a test can check that the report names one of them.

    >>> a, b = ConfigPair({"n_layer": 1}, {"n_layer": 2}, {"n_layer": (1, 2)})
    >>> b
    {'n_layer': 2}
    """

    changed: dict[str, tuple[Any, Any]]

    def __new__(cls, a: Any, b: Any, changed: dict[str, tuple[Any, Any]]):
        self = super().__new__(cls, (a, b))
        self.changed = changed
        return self

    @property
    def a(self) -> Any:
        return self[0]

    @property
    def b(self) -> Any:
        return self[1]

    def __repr__(self) -> str:
        # transformers configs print as pages of JSON: show only what was drawn
        fields = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in self.changed.items())
        return f"ConfigPair({_short(self[0])}, changed={{{fields}}})"

    def _repr_pretty_(self, printer, cycle) -> None:  # hypothesis' printer: the short repr too
        printer.text(repr(self))


def configs(base: Any, **fields: Any) -> SearchStrategy:
    """Configs shaped like ``base``, its integer size fields drawn in small, valid ranges.

    ``base`` is a dataclass, a dict, or an object with ``to_dict()`` and a
    constructor taking those keys (e.g. a transformers config). Fields named as
    in :data:`SIZE_FIELDS` with a positive integer value are varied (1-4 layers,
    heads and experts; kv heads dividing heads; hidden a multiple of twice the
    heads; vocab 8-64; ...), so models stay
    tiny. ``fields`` overrides: a strategy, a constant, or a callable taking the
    values drawn so far (a dict) and returning either, to state a constraint.

    >>> configs(TinyConfig(), num_hidden_layers=st.integers(1, 8))  # doctest: +SKIP
    >>> configs(GPT2Config(), n_embd=lambda c: st.sampled_from([8 * c["n_head"]]))  # doctest: +SKIP
    """
    plan = _plan(base, fields)

    @st.composite
    def draw_config(draw):
        return _rebuild(base, _draw_values(draw, plan, _values(base)))

    return draw_config()


def mismatched_configs(base: Any, factory: Callable[[Any], torch.nn.Module],
                       **fields: Any) -> SearchStrategy:
    """:class:`ConfigPair` ``(a, b)`` of configs like ``base`` whose models' schemas differ.

    ``b`` is ``a`` with one size field changed to a value the other fields
    allow (fields given as callables are drawn again); ``pair.changed`` lists
    every field that differs. Both models are built on the meta device (``with
    torch.device("meta"): factory(cfg)``), so large configs cost nothing;
    pairs whose schemas agree are discarded. ``fields`` as in :func:`configs`.

    >>> @given(mismatched_configs(TinyConfig(), TinyLM))          # doctest: +SKIP
    ... def test_diff_names_the_field(pair):
    ...     a, b = pair
    ...     d = pc.diff(meta(a), meta(b), configs=(a, b))
    ...     assert not d.ok and any(f in str(d) for f in pair.changed)
    """
    plan = _plan(base, fields)
    if not plan:
        raise ValueError(f"{type(base).__name__} has no integer size field to vary "
                         f"(looked for {', '.join(n for ns in SIZE_FIELDS.values() for n in ns)}); "
                         "name one with fields=")
    start = _values(base)
    schema_of = _meta_schemas(factory)

    @st.composite
    def draw_pair(draw):
        a_vals = _draw_values(draw, plan, start)
        target = draw(st.sampled_from([f.name for f in plan]))
        b_vals = dict(a_vals)
        moved = False
        for i, f in enumerate(plan):
            if f.name == target:
                checks = [g for g in plan[i + 1:] if g.valid is not None]

                def fits(v, f=f, old=a_vals[f.name], checks=checks):
                    values = {**b_vals, f.name: v}
                    return v != old and all(g.valid(values, values[g.name]) for g in checks)

                b_vals[f.name] = draw(_strategy(f.make(b_vals)).filter(fits))
                moved = True
            elif moved and f.depends:
                b_vals[f.name] = draw(_strategy(f.make(b_vals)))
        a, b = _rebuild(base, a_vals), _rebuild(base, b_vals)
        assume(schema_of(a) != schema_of(b))
        return ConfigPair(a, b, config_fields_diff(config_to_dict(a), config_to_dict(b)))

    return draw_pair()


# -- plan: which fields, drawn how -----------------------------------------------------------

def _plan(base: Any, overrides: Mapping[str, Any]) -> list[_Field]:
    values = _values(base)
    role_of = {}
    for role, names in SIZE_FIELDS.items():
        for name in names:
            if _is_size(values.get(name)) or name in overrides:
                role_of.setdefault(role, name)
    plan = []
    for role, name in role_of.items():
        if name in overrides:
            plan.append(_user_field(name, overrides[name]))
        else:
            plan.append(_ROLES[role](name, role_of, values))
    plan += [_user_field(n, s) for n, s in overrides.items() if n not in role_of.values()]
    return plan


def _user_field(name: str, spec: Any) -> _Field:
    if isinstance(spec, SearchStrategy):
        return _Field(name, lambda v: spec)
    if callable(spec):
        return _Field(name, spec, depends=True)
    return _Field(name, lambda v: st.just(spec))


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _layers(name, roles, base):
    return _Field(name, lambda v: st.integers(1, 4))


def _counts(name, roles, base):
    return _Field(name, lambda v: st.integers(1, 4))


def _experts_per_token(name, roles, base):
    experts = roles.get("experts")
    top = (lambda v: v[experts]) if experts else (lambda v: 2)
    return _Field(name, lambda v: st.integers(1, top(v)), valid=lambda v, x: x <= top(v))


def _kv_heads(name, roles, base):
    heads = roles.get("heads")
    if not heads:
        return _Field(name, lambda v: st.integers(1, 4))
    return _Field(name, lambda v: st.sampled_from(_divisors(v[heads])),
                  valid=lambda v, x: v[heads] % x == 0)


def _head_dim(name, roles, base):
    # rotary embeddings rotate pairs of channels: even sizes only
    return _Field(name, lambda v: st.integers(1, 8).map(lambda k: 2 * k))


def _hidden(name, roles, base):
    heads = roles.get("heads")
    if not heads:
        return _Field(name, lambda v: st.integers(2, 16).map(lambda k: 2 * k))
    # configs check hidden % heads even with a head_dim field; without one, the head
    # size is hidden / heads, and even (rotary)
    return _Field(name, lambda v: st.integers(1, 4).map(lambda k: 2 * k * v[heads]),
                  valid=lambda v, x: x % (2 * v[heads]) == 0)


def _intermediate(name, roles, base):
    return _Field(name, lambda v: st.integers(2, 64))


def _vocab(name, roles, base):
    # an embedding's padding_idx must lie inside the vocabulary
    specials = [base.get(k) for k in ("pad_token_id", "padding_idx")]
    low = max([8] + [s + 1 for s in specials if _is_size(s) and s < 64])
    return _Field(name, lambda v: st.integers(low, 64))


def _positions(name, roles, base):
    return _Field(name, lambda v: st.integers(8, 64))


_ROLES = {
    "layers": _layers, "experts": _counts, "experts_per_token": _experts_per_token,
    "heads": _counts, "kv_heads": _kv_heads, "head_dim": _head_dim, "hidden": _hidden,
    "intermediate": _intermediate, "vocab": _vocab, "positions": _positions,
}


def _strategy(spec: Any) -> SearchStrategy:
    return spec if isinstance(spec, SearchStrategy) else st.just(spec)


def _draw_values(draw, plan: list[_Field], start: Values) -> Values:
    values = dict(start)
    for f in plan:
        values[f.name] = draw(_strategy(f.make(values)))
    return values


# -- configs as values and back ----------------------------------------------------------------

def _values(cfg: Any) -> Values:
    """The config's top-level fields with their Python values (not JSON-converted).

    The values are the config's own objects, the same on every call (``_rebuild`` tells
    what changed by identity). A project's ``PretrainedConfig`` subclass (minimind's) is a
    dataclass under transformers 5 whose declared fields are only the base class's; its
    own (``num_hidden_layers``), set in ``__init__``, are found through ``to_dict()``.
    """
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        out = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        if callable(getattr(cfg, "to_dict", None)):
            out.update({k: getattr(cfg, k) for k in cfg.to_dict() if k not in out and hasattr(cfg, k)})
        return out
    if isinstance(cfg, Mapping):
        return dict(cfg)
    if callable(getattr(cfg, "to_dict", None)):
        return dict(cfg.to_dict())
    raise TypeError(f"cannot draw configs like a {type(cfg).__name__}: pass a dataclass, "
                    "a dict, or an object with to_dict() and a constructor taking its keys")


def _rebuild(base: Any, values: Values) -> Any:
    """A config of ``base``'s type holding ``values``."""
    old = _values(base)
    values = _per_layer_lists(old, values)
    changes = {k: v for k, v in values.items() if k not in old or old[k] is not v}
    if dataclasses.is_dataclass(base) and not isinstance(base, type):
        try:
            return dataclasses.replace(base, **changes)
        except (TypeError, ValueError):
            pass  # init=False fields and the like: fall back to the constructor
    if isinstance(base, Mapping):
        out = {**base, **changes}
        try:
            return type(base)(out)
        except TypeError:
            return out
    if callable(getattr(base, "to_dict", None)):
        return type(base)(**{**base.to_dict(), **changes})
    out = copy.copy(base)  # pragma: no cover - _values rejected it already
    for k, v in changes.items():
        setattr(out, k, v)
    return out


def _per_layer_lists(old: Values, values: Values) -> Values:
    """Lists with one entry per layer (transformers' ``layer_types``) follow the layer count,
    repeating their pattern (configs check that the lengths agree)."""
    field = next((n for n in LAYER_FIELDS if _is_size(old.get(n))), None)
    if field is None or values.get(field) == old[field]:
        return values
    n0, n1 = old[field], values[field]
    out = dict(values)
    for k, v in old.items():
        if isinstance(v, (list, tuple)) and len(v) == n0 and values.get(k) is v:
            out[k] = type(v)(v[i % n0] for i in range(n1))
    return out


def _short(cfg: Any) -> str:
    """``LlamaConfig(num_hidden_layers=1, hidden_size=8, ...)``: size fields only."""
    try:
        values = _values(cfg)
    except TypeError:
        return repr(cfg)
    sizes = [n for names in SIZE_FIELDS.values() for n in names if _is_size(values.get(n))]
    return f"{type(cfg).__name__}({', '.join(f'{n}={values[n]!r}' for n in sizes)})"


def _meta_schemas(factory: Callable[[Any], torch.nn.Module]) -> Callable[[Any], dict]:
    """``schema_of(cfg)``: the schema of ``factory(cfg)`` built on the meta device, cached."""
    from ..api import schema

    cache: dict[str, dict] = {}

    def schema_of(cfg: Any) -> dict:
        key = repr(sorted(config_to_dict(cfg).items()))
        if key not in cache:
            if len(cache) > 512:
                cache.clear()
            with torch.device("meta"):
                model = factory(cfg)
            cache[key] = dict(schema(model))
        return cache[key]

    return schema_of
