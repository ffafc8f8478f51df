"""Save-side variations: one module per way training wraps and writes a model.

The registry (:mod:`.registry`) is torch-free, so the plugin can validate marker
arguments at collection time (:mod:`pytest_ckpt.plugin.selection`); each variation's
module is imported on first use.
"""

from .registry import DEFAULT, VARIATIONS, UnknownVariation, Variation, VariationUnavailable

__all__ = ["DEFAULT", "VARIATIONS", "UnknownVariation", "Variation", "VariationUnavailable"]
