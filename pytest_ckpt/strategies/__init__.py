"""Hypothesis strategies that draw checkpoint drift, for property tests of save/load code.

>>> from hypothesis import given
>>> from pytest_ckpt import strategies as ckpt_st
>>> @given(ckpt_st.mutations(model.state_dict()))       # doctest: +SKIP
... def test_loader_rejects_drift(m):
...     path = save_somehow(m.state_dict)
...     with pytest.raises(pc.CheckpointMismatch):
...         my_loader(path)

| strategy | draws |
|---|---|
| :func:`configs` | configs like ``base``, integer size fields varied in small valid ranges |
| :func:`mismatched_configs` | :class:`ConfigPair` ``(a, b)`` whose models' schemas differ, ``.changed`` |
| :func:`mutations` | :class:`Mutation`: one realistic drift of a state dict, with its cause |
| :func:`state_dicts` | state dicts of every dtype, NaN/-0.0/inf, 0-dim and empty tensors, ties |

Hypothesis is imported here only, never by ``import pytest_ckpt``; nothing in
this package changes hypothesis settings (profiles are the test suite's choice).
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without hypothesis
    raise ImportError(
        "pytest_ckpt.strategies needs hypothesis: pip install 'pytest-ckpt[hypothesis]'"
    ) from e

from .configs import SIZE_FIELDS, ConfigPair, configs, mismatched_configs
from .mutations import CAUSES, MUTATION_KINDS, Mutation, mutations
from .tensors import DTYPES, state_dicts

__all__ = ["configs", "mismatched_configs", "ConfigPair", "SIZE_FIELDS", "mutations", "Mutation",
           "MUTATION_KINDS", "CAUSES", "state_dicts", "DTYPES"]
