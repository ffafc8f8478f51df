"""The ``config.json`` that transformers' ``save_pretrained`` writes beside the weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["beside"]

CONFIG_JSON = "config.json"


def beside(path: Path) -> dict[str, Any] | None:
    """The ``config.json`` of a ``save_pretrained`` directory (``path`` itself, or the directory
    of a weights file in it), when it reads as a transformers config (it names its
    ``model_type`` or ``architectures``); else None. Never an error: the weights are the file."""
    directory = path if path.is_dir() else path.parent
    candidate = directory / CONFIG_JSON
    if not candidate.is_file():
        return None
    try:
        config = json.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not ("model_type" in config or "architectures" in config):
        return None
    return config
