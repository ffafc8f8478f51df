"""Target 1: schema of a Llama-70B-shaped Hugging Face checkpoint (30 sparse shards) on a meta model."""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

import harness

SHARDS = 30
#: Llama-3-70B: the shapes of the real checkpoint (vocab 128256, GQA with 8 KV heads)
CONFIG = dict(
    hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
    num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192,
    rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
    bos_token_id=128000, eos_token_id=128001,
)


def llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(**CONFIG, dtype="bfloat16", architectures=["LlamaForCausalLM"])


def meta_model():
    """``LlamaForCausalLM`` of the 70B config on the meta device, in the checkpoint's dtype."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config())
    return model.to(torch.bfloat16)


def shapes() -> list[tuple[str, list[int]]]:
    """Names and shapes in the order Hugging Face writes them."""
    h, i, v = CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG["vocab_size"]
    kv = h // CONFIG["num_attention_heads"] * CONFIG["num_key_value_heads"]
    out = [("model.embed_tokens.weight", [v, h])]
    for n in range(CONFIG["num_hidden_layers"]):
        p = f"model.layers.{n}."
        out += [
            (p + "input_layernorm.weight", [h]),
            (p + "mlp.down_proj.weight", [h, i]),
            (p + "mlp.gate_proj.weight", [i, h]),
            (p + "mlp.up_proj.weight", [i, h]),
            (p + "post_attention_layernorm.weight", [h]),
            (p + "self_attn.k_proj.weight", [kv, h]),
            (p + "self_attn.o_proj.weight", [h, h]),
            (p + "self_attn.q_proj.weight", [h, h]),
            (p + "self_attn.v_proj.weight", [kv, h]),
        ]
    out += [("model.norm.weight", [h]), ("lm_head.weight", [v, h])]
    return out


def write_checkpoint(root: Path) -> Path:
    """The directory ``save_pretrained`` would write, every shard a sparse file: real header, data a hole."""
    root.mkdir(parents=True, exist_ok=True)
    tensors = shapes()
    total = sum(math.prod(s) * 2 for _, s in tensors)
    per_shard = total / SHARDS
    shards: list[list[tuple[str, list[int]]]] = [[]]
    size = 0
    for name, shape in tensors:
        nbytes = math.prod(shape) * 2
        if shards[-1] and size + nbytes > per_shard * 1.02 and len(shards) < SHARDS:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    weight_map = {}
    for k, shard in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        header: dict = {"__metadata__": {"format": "pt"}}
        pos = 0
        for name, shape in shard:
            nbytes = math.prod(shape) * 2
            header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [pos, pos + nbytes]}
            pos += nbytes
            weight_map[name] = fname
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(root / fname, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            f.truncate(8 + len(raw) + pos)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    llama_config().save_pretrained(root)
    return root


def cases(root: Path, model) -> dict:
    import torch
    from safetensors import safe_open
    from transformers.modeling_utils import load_state_dict

    import pytest_ckpt as pc

    shards = sorted(root.glob("*.safetensors"))
    live = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}

    def safe_open_headers():
        out = {}
        for shard in shards:
            with safe_open(shard, framework="pt") as f:
                for k in f.keys():
                    piece = f.get_slice(k)
                    out[k] = (piece.get_shape(), piece.get_dtype())
        return out

    def transformers_meta():  # transformers' own reader, on meta, then the comparison by hand
        loaded = {}
        for shard in shards:
            loaded.update(load_state_dict(shard, map_location="meta"))
        got = {k: (tuple(v.shape), v.dtype) for k, v in loaded.items()}
        return [k for k in live.keys() | got.keys() if live.get(k) != got.get(k)]

    def schema():
        return pc.schema(root)

    def diff():
        result = pc.diff(model, root, values=False)
        assert result.ok, result
        return result

    return {"pc.schema": schema, "pc.diff": diff, "safe_open headers": safe_open_headers,
            "transformers load_state_dict(meta) + compare": transformers_meta}


def _from_pretrained_note(root: Path) -> str:
    from transformers import LlamaForCausalLM

    try:
        LlamaForCausalLM.from_pretrained(root, device_map="meta")
    except Exception as e:  # noqa: BLE001 - the reason is the figure
        return f"`from_pretrained(device_map='meta')` does not run here: {str(e).splitlines()[0][:110]}"
    return "`from_pretrained(device_map='meta')` ran"


def _memory(args: list[str]) -> dict:
    case, root = args[0], Path(args[1])
    import torch  # noqa: F401 - the baseline: interpreter with torch and transformers imported
    import transformers  # noqa: F401

    import pytest_ckpt as pc

    model = meta_model()
    pc.schema(root / "model-00001-of-00030.safetensors")  # first-call imports outside the figure
    return harness.memory_of(cases(root, model)[case])


def run(work: Path, rounds: int) -> list[harness.Row]:
    root = write_checkpoint(work / "llama-70b")
    apparent = sum(p.stat().st_size for p in root.glob("*.safetensors"))
    on_disk = sum(p.stat().st_blocks * 512 for p in root.glob("*"))
    model = meta_model()
    timing = harness.interleaved(cases(root, model), rounds=rounds)
    memory = {c: harness.in_child(__file__, "memory", c, str(root)) for c in ("pc.schema", "pc.diff")}
    note = _from_pretrained_note(root)
    sch, dif = timing["pc.schema"], timing["pc.diff"]
    so, tf = timing["safe_open headers"], timing["transformers load_state_dict(meta) + compare"]
    size = f"{len(list(root.glob('*.safetensors')))} shards, {apparent / 1e9:.0f} GB apparent, {on_disk / 2**20:.1f} MiB on disk"
    return [
        harness.Row("1", f"`pc.schema(dir)`, Llama-70B ({size})", sch.median, "s", 0.05,
                    peers={"`safe_open` headers": harness.fmt(so.median, "s")}, spread=sch.spread),
        harness.Row("1", "`pc.diff(meta model, dir, values=False)`", dif.median, "s", 0.3,
                    peers={"transformers `load_state_dict(meta)` + compare": harness.fmt(tf.median, "s")},
                    note=note, spread=dif.spread),
        harness.Row("1", "peak memory of `pc.diff` above torch+transformers+model", memory["pc.diff"]["peak_rss_mb"],
                    "MB", 100.0, note=f"`pc.schema`: +{memory['pc.schema']['peak_rss_mb']:.1f} MB peak RSS"),
    ]


if __name__ == "__main__":
    harness.child_main({"memory": _memory})
