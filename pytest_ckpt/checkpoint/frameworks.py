"""Which framework wrote a checkpoint, read from the keys it leaves at the top of the file.

Lightning's ``Trainer.save_checkpoint`` writes ``state_dict`` (the LightningModule's, so every
name carries the attribute the model is held under: ``model.``), ``optimizer_states``,
``lr_schedulers``, ``hyper_parameters`` (the LightningModule's ``save_hyperparameters()``) and
``pytorch-lightning_version`` (both ``lightning`` and ``pytorch_lightning`` write that key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["SavedBy", "saved_by", "transformers_saved"]

LIGHTNING_VERSION_KEY = "pytorch-lightning_version"


@dataclass(frozen=True)
class SavedBy:
    """The framework that wrote a file, and where it keeps the model's config."""

    name: str
    version: str | None = None
    #: what else it says about the file, for ``inspect`` (step, what is kept beside the weights)
    detail: str = ""
    #: the top-level key holding the config the model was built from, when there is one
    config_key: str | None = None

    def __str__(self) -> str:
        version = f" {self.version}" if self.version else ""
        return f"{self.name}{version}" + (f" ({self.detail})" if self.detail else "")


def saved_by(tree: Any) -> SavedBy | None:
    """The framework whose checkpoint layout ``tree`` (a file's loaded contents) has; else None.

    >>> str(saved_by({"state_dict": {}, "pytorch-lightning_version": "2.6.6", "global_step": 1}))
    'Lightning 2.6.6 (Trainer.save_checkpoint, global step 1)'
    """
    if not isinstance(tree, Mapping) or LIGHTNING_VERSION_KEY not in tree:
        return None
    parts = ["Trainer.save_checkpoint"]
    for key, words in (("epoch", "epoch"), ("global_step", "global step")):
        if isinstance(tree.get(key), int):
            parts.append(f"{words} {tree[key]}")
    beside = [k for k in ("optimizer_states", "lr_schedulers", "loops", "callbacks") if tree.get(k)]
    detail = ", ".join(parts) + (f"; {', '.join(beside)} beside the weights" if beside else "")
    hparams = tree.get("hyper_parameters")
    return SavedBy(
        "Lightning",
        version=str(tree[LIGHTNING_VERSION_KEY]),
        detail=detail,
        config_key="hyper_parameters" if isinstance(hparams, Mapping) and hparams else None,
    )


def transformers_saved(config: Mapping[str, Any]) -> SavedBy:
    """A ``save_pretrained`` directory, read from its ``config.json``.

    >>> str(transformers_saved({"architectures": ["LlamaForCausalLM"], "transformers_version": "5.24.0"}))
    'transformers 5.24.0 (save_pretrained of LlamaForCausalLM; config.json beside the weights)'
    """
    arch = config.get("architectures") or [config.get("model_type", "a model")]
    return SavedBy("transformers", version=config.get("transformers_version"),
                   detail=f"save_pretrained of {', '.join(map(str, arch))}; config.json beside the weights",
                   config_key="config.json")
