"""PEFT/LoRA adapters that do not do what was trained: keys that match nothing (the adapter
silently does not load), an adapter whose ``lora_B`` is all zeros (a no-op), a merged model
whose checkpoint still carries the adapter."""

from __future__ import annotations

import torch

from ...checkpoint.notes import Note
from .context import listing, plural, verb

#: what PeftModel's names carry in front of the model's own (base_model is the LoraModel,
#: .model the model it wraps)
PEFT_PREFIX = "base_model.model."


def is_adapter(name: str) -> bool:
    return ".lora_" in name or name.startswith("lora_")


def adapter_keys_match_nothing(diff, expected, actual, ctx) -> list[Note]:
    """Adapter tensors of the checkpoint named otherwise than the model's adapter: peft's loader
    skips what it cannot place, so the adapter silently keeps its initial (no-op) values."""
    unused = [n for n in diff.unexpected if is_adapter(n) and n not in ctx.explained]
    wanted = {n for n in diff.missing if is_adapter(n) and n not in ctx.explained}
    if not unused or not wanted:
        return []
    best = None
    for drift, read in _DRIFTS:
        pairs = {u: read(u) for u in unused if read(u) in wanted}
        if pairs and (best is None or len(pairs) > len(best[1])):
            best = (drift, pairs)
    if best is None:
        return []
    (what, fix), pairs = best
    ctx.explained.update(pairs)
    ctx.explained.update(pairs.values())
    n = len(pairs)
    example = next(iter(pairs))
    return [Note(
        "adapter",
        f"{plural(n, 'adapter tensor')} in the {ctx.noun} {verb(n, 'matches', 'match')} nothing in "
        f"the {ctx.model}: {what}; e.g. {example} (the {ctx.model}'s {pairs[example]})",
        fix=fix, names=tuple(sorted([*pairs, *pairs.values()])))]


def _drop_adapter_name(name: str) -> str:
    # lora_A.default.weight -> lora_A.weight: the adapter's name left in a saved key
    parts = name.split(".")
    for i in range(1, len(parts) - 1):
        if parts[i - 1].startswith("lora_") and parts[i] not in ("weight", "bias"):
            return ".".join(parts[:i] + parts[i + 1:])
    return name


_SAVE_WITH_PEFT = ("save the adapter with model.save_pretrained(dir) (or "
                   "peft.get_peft_model_state_dict(model)), which writes the names peft loads")
_SKIPPED = "peft's set_peft_model_state_dict skips them and the adapter silently does not load"
#: (what differs and what follows, fix), and how a checkpoint name reads as the model's
_DRIFTS = [
    (("their names carry the adapter's name (.default.), which peft's files leave out and its "
      "loader adds itself: a loader that adds it again, or a strict=False load of peft's own "
      "file, places nothing",
      _SAVE_WITH_PEFT + ", not a filtered model.state_dict()"), _drop_adapter_name),
    ((f"their names lack {PEFT_PREFIX}, which the PeftModel's names carry: {_SKIPPED}",
      _SAVE_WITH_PEFT + ": save from the PeftModel, not from its base model"),
     lambda n: PEFT_PREFIX + n),
    ((f"their names carry {PEFT_PREFIX}, which the names of what it is loaded into do not: "
      "a load_state_dict(strict=False) places nothing",
      "load the adapter into the PeftModel (peft.PeftModel.from_pretrained(base, dir)), or save "
      "from the model it is loaded into"),
     lambda n: n[len(PEFT_PREFIX):] if n.startswith(PEFT_PREFIX) else n),
]


def noop_adapter(diff, expected, actual, ctx) -> list[Note]:
    """``lora_B`` all zeros on the checkpoint side where the model's is not: the adapter adds
    nothing (never loaded, or saved before training), however its ``lora_A`` looks."""
    if not actual.has_values:
        return []
    zero = [n for n in diff.values if ".lora_B" in n and n not in ctx.explained
            and _all_zero(actual.tensors[n]) and not _all_zero(expected.tensors[n])]
    if not zero:
        return []
    layers = sorted({n.split(".lora_B", 1)[0] for n in zero})
    claimed = [n for n in diff.values if n.split(".lora_", 1)[0] in layers and is_adapter(n)]
    ctx.explained.update(claimed)
    return [Note(
        "adapter",
        f"lora_B of {plural(len(layers), 'adapted layer')} is all zeros in the {ctx.noun} but "
        f"trained in the {ctx.model} ({listing(layers, 2)}): a no-op adapter, whose weights "
        "were not loaded (keys named otherwise, skipped by a non-strict load) or were saved "
        "before training",
        fix="load the adapter with peft.PeftModel.from_pretrained(base, dir) (or "
            "set_peft_model_state_dict) and check what it reports as unexpected; save after "
            "training",
        names=tuple(sorted(claimed)))]


def _all_zero(t: torch.Tensor) -> bool:
    return t.numel() > 0 and not bool(t.detach().float().abs().max())


def merged_with_adapter_keys(diff, expected, actual, ctx) -> list[Note]:
    """A merged model (no adapter layers) against a checkpoint that still holds lora_A/lora_B and
    base_layer keys: saved from the PeftModel before merge_and_unload()."""
    adapter = [n for n in diff.unexpected if is_adapter(n) and n not in ctx.explained]
    if not adapter or any(is_adapter(n) for n in expected.schema):
        return []
    missing = set(diff.missing) - ctx.explained
    base = {}  # the checkpoint's q_proj.base_layer.weight is the merged model's q_proj.weight
    for n in diff.unexpected:
        read = n[len(PEFT_PREFIX):] if n.startswith(PEFT_PREFIX) else n
        read = read.replace(".base_layer.", ".")
        if read in missing and n not in ctx.explained:
            base[n] = read
    ctx.explained.update(adapter, base, base.values())
    also = f" and {plural(len(base), 'base_layer/' + PEFT_PREFIX + ' name')}" if base else ""
    return [Note(
        "adapter",
        f"the {ctx.noun} still carries the adapter beside a merged {ctx.model}: "
        f"{plural(len(adapter), 'lora_A/lora_B tensor')}{also} (e.g. {adapter[0]}): it was saved "
        "from the PeftModel before merge_and_unload()",
        fix="save merged = model.merge_and_unload() and then merged.state_dict() (merge_adapter() "
            "alone keeps the adapter layers and their names)",
        names=tuple(sorted([*adapter, *base, *base.values()])))]
