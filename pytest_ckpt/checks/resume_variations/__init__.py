"""Resume variations: one module per setting a training run really has (wrappers, a fresh process, ranks).

The registry (:mod:`.registry`) is torch-free, so the plugin can validate marker arguments at
collection time; each variation's module is imported on first use.
"""

from .registry import RESUME_DEFAULT, RESUME_VARIATIONS

__all__ = ["RESUME_DEFAULT", "RESUME_VARIATIONS"]
