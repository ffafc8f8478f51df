"""tinyllm: a small GPT-style language model, trained and served the way real projects do.

``config.py`` (the config dataclass), ``model.py`` (numbered blocks ``h.0 ...``,
tied embeddings), ``train.py`` (a resumable run: start/step/save/load with AdamW,
a warm-up schedule and the data position; DDP + torch.compile, nested training
state, a sharded safetensors export for serving), ``infer.py`` (plain-torch
loading, as inference code is written), ``drifts.py`` (the five classic drifts,
a resume drift and a save written in place, as one-function patches the demo switches on with
``TINYLLM_DRIFT``).
"""
