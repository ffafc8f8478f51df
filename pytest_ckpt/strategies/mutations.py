"""One realistic drift of a state dict at a time, with the cause the report must name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ..checkpoint.canonical import WRAPPER_PREFIXES
from ..formats.dtypes import dtype_name

__all__ = ["MUTATION_KINDS", "CAUSES", "Mutation", "mutations"]

MUTATION_KINDS = ("drop", "rename", "reshape", "recast", "perturb", "prefix", "nest", "truncate-tail")

#: kind -> the note kinds that explain it; the first is the cause the report must name.
#: A dropped tensor that was a whole block is "layer-count"; a cut tail is "incomplete"
#: when the checkpoint stores its config, else missing blocks and tensors.
CAUSES: dict[str, tuple[str, ...]] = {
    "drop": ("missing", "layer-count", "incomplete"),
    "rename": ("renamed",),
    "reshape": ("shape",),
    "recast": ("dtype",),
    "perturb": ("values",),
    "prefix": ("prefix",),
    "nest": ("nested",),
    "truncate-tail": ("incomplete", "layer-count", "missing"),
}

#: drifts the tool undoes by design: the diff is ok and a note says what was normalized
UNDONE = ("prefix", "nest")

#: prefixes wrappers add (DataParallel/DDP, torch.compile, both orders, FSDP1, checkpointing)
PREFIXES = (*WRAPPER_PREFIXES, "_orig_mod.module.", "module._orig_mod.")

#: where training scripts put the weights inside a saved training state
NEST_PATHS = (("state_dict",), ("model",), ("model_state_dict",), ("module",),
              ("trainer", "var_wo_ddp"), ("checkpoint", "model"))

#: renames seen in the wild (a refactor, another codebase's names); any name may also get "_v2"
_RENAMES = {
    "weight": ("gamma", "kernel"), "bias": ("beta",), "attn": ("attention", "self_attn"),
    "self_attn": ("attention", "attn"), "mlp": ("ffn", "feed_forward"),
    "norm": ("ln", "layer_norm"), "layers": ("blocks", "h"), "h": ("layers", "blocks"),
    "embed": ("embeddings", "wte"), "embed_tokens": ("embeddings", "wte"),
    "lm_head": ("output", "head"), "model": ("transformer", "backbone"),
    "transformer": ("model", "backbone"),
}


@dataclass(frozen=True, repr=False)
class Mutation:
    """One drift: ``state_dict`` is the drifted checkpoint content (for ``nest``, a training state).

    ``name`` is the key drifted (for ``prefix`` the prefix, for ``nest`` the dotted
    path); ``names`` are the canonical names the report must cover; ``cause`` is
    the note kind it must show; :meth:`check` says whether a diff does.

    >>> m = Mutation("recast", "w", {"w": torch.zeros(2, dtype=torch.float16)}, ("w",),
    ...              "float32 -> float16")
    >>> m, m.cause
    (Mutation('recast', 'w', float32 -> float16), 'dtype')
    """

    kind: str
    name: str
    state_dict: Any
    names: tuple[str, ...] = ()
    detail: str = ""

    @property
    def cause(self) -> str:
        return CAUSES[self.kind][0]

    @property
    def undone(self) -> bool:
        """True for drifts the tool undoes by design (prefix, nest): the diff must be ok."""
        return self.kind in UNDONE

    def check(self, diff) -> str | None:
        """``None`` when ``diff`` (model vs this drifted checkpoint) reports this drift
        right, else why not, in a line: a false pass, a wrong cause, an unnamed tensor.

        >>> problem = m.check(pc.diff(model, m.state_dict))          # doctest: +SKIP
        >>> assert problem is None, problem                         # doctest: +SKIP
        """
        notes = list(diff.notes)
        if self.undone:
            if not diff.ok:
                return f"false alarm: {self!r} should be undone, got: {_first(diff)}"
            if not any(n.kind == self.cause for n in notes):
                return f"no {self.cause!r} note says what was normalized for {self!r}"
            return None
        if diff.ok:
            return f"false pass: {self!r} gives an ok diff"
        allowed = CAUSES[self.kind]
        drifted = set(self.names)
        for note in notes:
            if not note.info and note.kind not in allowed:
                return f"wrong cause for {self!r}: [{note.kind}] {note.text}"
            # a drift not undone by design is never explained away by an informational note
            if note.info and drifted.intersection(note.names):
                return f"{self!r} is explained by an informational note: [{note.kind}] {note.text}"
        # coverage from cause notes only: an informational note covers nothing
        covered = {n for note in notes if not note.info and note.kind in allowed for n in note.names}
        for name in self.names:
            if name not in covered:
                return f"{name} is not named by a {'/'.join(allowed)} note for {self!r}"
        return None

    def __repr__(self) -> str:
        # the drifted state dict would print every tensor: the drift says it all
        return f"Mutation({self.kind!r}, {self.name!r}, {self.detail})"

    def _repr_pretty_(self, printer, cycle) -> None:  # hypothesis' printer: the short repr too
        printer.text(repr(self))


def mutations(state_dict: Any, kinds: tuple[str, ...] = MUTATION_KINDS) -> SearchStrategy:
    """One :class:`Mutation` of ``state_dict`` (a mapping of names to tensors, or a module).

    Kinds: ``drop`` a tensor; ``rename`` a name part (one key, a module, or
    everywhere); ``reshape`` (grow, shrink, transpose, unsqueeze, flatten);
    ``recast`` to another dtype; ``perturb`` one element by 1 ulp or more (one
    step for integers, a flip for bools); ``prefix`` every name with a wrapper
    prefix; ``nest`` the weights in a training state; ``truncate-tail``: the
    last tensors absent, as after an interrupted write. Tied tensors drift
    together (they are one parameter). Shrinks to the first kind, first key,
    smallest change. The input is never modified.

    >>> @given(mutations(model.state_dict()))                    # doctest: +SKIP
    ... def test_every_drift_is_reported(m):
    ...     assert m.check(pc.diff(model, m.state_dict)) is None
    """
    if isinstance(state_dict, torch.nn.Module):
        state_dict = state_dict.state_dict()
    sd = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise ValueError("mutations() needs a state dict with at least one tensor")
    unknown = set(kinds) - set(MUTATION_KINDS)
    if unknown:
        raise ValueError(f"unknown mutation kinds {sorted(unknown)}; known: {MUTATION_KINDS}")
    ties = _tie_groups(sd)
    options = [_BUILDERS[k](sd, ties) for k in kinds]
    options = [o for o in options if o is not None]
    if not options:
        raise ValueError(f"no mutation of kinds {kinds} applies to this state dict")
    return st.one_of(options)


# -- one builder per kind: (sd, ties) -> strategy, or None when it cannot apply --------------

def _drop(sd, ties):
    if len(sd) < 2:
        return None  # dropping the only tensor leaves no checkpoint at all

    def build(name: str) -> Mutation:
        # one name of a tie group stored alone is how save_pretrained writes it, not drift:
        # the whole group goes
        group = ties.get(name, (name,))
        detail = "dropped" if len(group) == 1 else f"dropped with its tied {', '.join(group[1:])}"
        return Mutation("drop", name, {k: v for k, v in sd.items() if k not in group}, group, detail)

    heads = [k for k in sd if ties.get(k, (k,))[0] == k]
    return st.sampled_from(heads).map(build).filter(lambda m: m.state_dict)


def _rename(sd, ties):
    keys = [k for k in sd if any(not p.isdigit() for p in k.split("."))]
    if not keys:
        return None

    @st.composite
    def build(draw):
        name = draw(st.sampled_from(keys))
        parts = name.split(".")
        # leaf first: shrinking goes to the smallest rename
        i = draw(st.sampled_from([j for j in reversed(range(len(parts))) if not parts[j].isdigit()]))
        seg = parts[i]
        new = draw(st.sampled_from([*(r for r in _RENAMES.get(seg, ()) if r != seg), seg + "_v2"]))
        scopes = ["key", "everywhere"] + (["module"] if i < len(parts) - 1 else [])
        scope = draw(st.sampled_from(scopes))
        if scope == "key":
            hit = {name: i}
        elif scope == "module":
            head = ".".join(parts[:i + 1]) + "."
            hit = {k: i for k in sd if k.startswith(head)}
        else:
            hit = {k: None for k in sd if seg in k.split(".")}
        renamed = {k: _replace_part(k, seg, new, at) for k, at in hit.items()}
        kept = set(sd) - set(renamed)
        assume(len(set(renamed.values())) == len(renamed) and not kept & set(renamed.values()))
        # a tied name renamed while its partner keeps its name is filled by the partner on
        # load: the drift is then an unexpected extra name, not a rename
        assume(not any(set(ties.get(k, ())) & kept for k in renamed))
        # a new name must not read as a wrapper prefix (that would be the prefix drift)
        assume(not any(n.startswith(WRAPPER_PREFIXES) for n in renamed.values()))
        out = {renamed.get(k, k): v for k, v in sd.items()}
        detail = f"{seg} -> {new} ({scope}, {len(renamed)} {'key' if len(renamed) == 1 else 'keys'})"
        return Mutation("rename", name, out, tuple(renamed) + tuple(renamed.values()), detail)

    return build()


def _replace_part(name: str, old: str, new: str, at: int | None) -> str:
    parts = name.split(".")
    return ".".join(new if p == old and (at is None or j == at) else p for j, p in enumerate(parts))


def _reshape(sd, ties):
    @st.composite
    def build(draw):
        name = draw(st.sampled_from(list(sd)))
        t = sd[name]
        shape = tuple(t.shape)
        ops = ["unsqueeze"]
        if t.dim() >= 1:
            ops.append("grow")
        if any(s >= 2 for s in shape):
            ops.append("shrink")
        if t.dim() == 2 and shape[0] != shape[1]:
            ops.append("transpose")  # e.g. GPT-2's Conv1D against a Linear
        if t.dim() >= 2:
            ops.append("flatten")
        op = draw(st.sampled_from(ops))
        if op == "unsqueeze":
            new = t.unsqueeze(0)
        elif op == "transpose":
            new = t.t()
        elif op == "flatten":
            new = t.reshape(-1)
        elif op == "grow":  # e.g. a vocabulary padded to a multiple of 64
            d = draw(st.integers(0, t.dim() - 1))
            n = draw(st.integers(1, 4))
            grown = list(shape)
            grown[d] += n
            new = torch.zeros(grown, dtype=t.dtype)
            new.narrow(d, 0, shape[d]).copy_(t)
        else:
            d = draw(st.sampled_from([j for j, s in enumerate(shape) if s >= 2]))
            n = draw(st.integers(1, shape[d] - 1))
            new = t.narrow(d, 0, shape[d] - n).clone()
        group = ties.get(name, (name,))
        detail = f"{_shape(shape)} -> {_shape(new.shape)} ({op})"
        return Mutation("reshape", name, _replaced(sd, group, new), group, detail)

    return build()


_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_INTS = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _recast(sd, ties):
    @st.composite
    def build(draw):
        name = draw(st.sampled_from(list(sd)))
        t = sd[name]
        if t.is_complex():
            family = (torch.complex64, torch.complex128)
        elif t.is_floating_point():
            family = _FLOATS
        elif t.dtype == torch.bool:
            family = (torch.uint8, torch.int64)
        else:
            family = _INTS
        dtype = draw(st.sampled_from([d for d in family if d != t.dtype]))
        group = ties.get(name, (name,))
        detail = f"{dtype_name(t.dtype)} -> {dtype_name(dtype)}"
        return Mutation("recast", name, _replaced(sd, group, t.to(dtype)), group, detail)

    return build()


_INT_OF_WIDTH = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
#: the most ulps a perturbation moves, by element width (small enough to stay a near miss)
_MAX_ULPS = {1: 4, 2: 256, 4: 1 << 16, 8: 1 << 16}


def _perturb(sd, ties):
    keys = [k for k, t in sd.items() if t.numel() > 0]
    if not keys:
        return None

    @st.composite
    def build(draw):
        name = draw(st.sampled_from(keys))
        t = sd[name]
        flat = t.detach().cpu().clone().contiguous().reshape(-1)
        if flat.is_complex():
            flat = torch.view_as_real(flat).reshape(-1)
        i = draw(st.integers(0, flat.numel() - 1))
        if flat.dtype == torch.bool:
            before = bool(flat[i])
            flat[i] = not before
            how = f"{before} -> {not before}"
        elif flat.is_floating_point():
            n = draw(st.integers(1, _MAX_ULPS[flat.element_size()]))
            how = _step_float(flat, i, n)
        else:
            how = _step_int(flat, i, draw(st.integers(1, 3)))
        new = flat.view(torch.complex64 if t.dtype == torch.complex64 else
                        torch.complex128) if t.is_complex() else flat
        new = new.reshape(t.shape)
        group = ties.get(name, (name,))
        return Mutation("perturb", name, _replaced(sd, group, new), group, f"element {i}: {how}")

    return build()


def _step_float(flat: torch.Tensor, i: int, n: int) -> str:
    """Move element ``i`` by ``n`` ulps, towards zero where it can (never into NaN)."""
    width = flat.element_size() * 8
    bits = flat.view(_INT_OF_WIDTH[flat.element_size()])
    before = float(flat[i:i + 1].to(torch.float64))
    if before != before:  # NaN: any number differs from it
        bits[i] = 0
        return "nan -> 0.0"
    u = int(bits[i]) & ((1 << width) - 1)
    sign, mag = u >> (width - 1), u & ((1 << (width - 1)) - 1)
    mag = mag - n if mag >= n else mag + n
    u = (sign << (width - 1)) | mag
    bits[i] = u - (1 << width) if u >= 1 << (width - 1) else u
    after = float(flat[i:i + 1].to(torch.float64))
    return f"{before!r} -> {after!r} ({n} {'ulp' if n == 1 else 'ulps'})"


def _step_int(flat: torch.Tensor, i: int, n: int) -> str:
    before = int(flat[i])
    info = torch.iinfo(flat.dtype)
    after = before - n if before - n >= info.min else before + n
    flat[i] = after
    return f"{before} -> {after}"


def _prefix(sd, ties):
    return st.sampled_from(PREFIXES).map(lambda p: Mutation(
        "prefix", p, {p + k: v for k, v in sd.items()}, (), f"every name prefixed with {p}"))


def _nest(sd, ties):
    @st.composite
    def build(draw):
        path = draw(st.sampled_from(NEST_PATHS))
        tree: dict[str, Any] = {}
        weights_first = draw(st.booleans())
        if weights_first:
            _put(tree, path, sd)
        tree["epoch"] = draw(st.integers(0, 100))
        tree["global_step"] = draw(st.integers(0, 10**6))
        if draw(st.booleans()):
            tree["optimizer"] = _optimizer_state(sd)
        tree["args"] = {"lr": 1e-3, "seed": 0}
        if not weights_first:
            _put(tree, path, sd)
        where = ".".join(path)
        return Mutation("nest", where, tree, (), f"weights at {where} of a training state")

    return build()


def _put(tree: dict, path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _optimizer_state(sd: Mapping[str, torch.Tensor]) -> dict:
    # torch.optim's layout: per-parameter state under integer ids, never a model candidate
    floats = [t for t in sd.values() if t.is_floating_point()][:2]
    state = {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(t),
                 "exp_avg_sq": torch.zeros_like(t)} for i, t in enumerate(floats)}
    return {"state": state, "param_groups": [{"lr": 1e-3, "params": list(range(len(sd)))}]}


def _truncate_tail(sd, ties):
    if len(sd) < 2:
        return None
    keys = list(sd)

    def build(k: int) -> Mutation:
        cut = keys[len(keys) - k:]
        kept = {name: sd[name] for name in keys[:len(keys) - k]}
        # a cut tied name whose partner was written is filled by it on load: nothing lost
        lost = tuple(n for n in cut if not set(ties.get(n, ())) & kept.keys())
        return Mutation("truncate-tail", cut[0], kept, lost,
                        f"the last {k} of {len(keys)} tensors absent")

    return st.integers(1, len(keys) - 1).map(build).filter(lambda m: m.names)


_BUILDERS = {"drop": _drop, "rename": _rename, "reshape": _reshape, "recast": _recast,
             "perturb": _perturb, "prefix": _prefix, "nest": _nest, "truncate-tail": _truncate_tail}


# -- helpers ------------------------------------------------------------------------------------

def _tie_groups(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, ...]]:
    """name -> its tie group (names viewing one storage the same way), for tied names only."""
    from ..checkpoint.ties import tie_groups

    return {name: group for group in tie_groups(sd) for name in group}


def _replaced(sd: Mapping[str, torch.Tensor], names: tuple[str, ...], new: torch.Tensor) -> dict:
    # one new tensor for the whole tie group: a tied parameter drifts as one
    return {k: (new if k in names else v) for k, v in sd.items()}


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _first(diff) -> str:
    return str(diff).splitlines()[0] if str(diff) else "?"
