"""The fast fuzz profile: every format damaged a few dozen ways, judged by torch, safetensors, DCP
and transformers themselves (``make detection`` runs the thorough profile: ``benchmarks/fuzz.py``)."""

from collections import Counter

import pytest

from tests.strategies import fuzz

#: damaged checkpoints per format in ``make test``: seconds in all, not minutes
CASES = 12


@pytest.mark.parametrize("fmt", fuzz.FORMATS)
def test_damaged_checkpoints_give_a_clear_error_or_what_torch_reads(fmt):
    rows, problems = fuzz.fuzz((fmt,), CASES, seed=0)
    counts = Counter()
    for (name, _), c in rows.items():
        if name == fmt:
            counts.update(c)
    assert sum(counts[k] for k in fuzz.OUTCOMES) == CASES
    bad = {k: counts[k] for k in fuzz.BAD if counts[k]}
    assert not bad, f"{bad}: {problems}"
    assert counts["clear error"] > 0  # damage is found at all: the fuzz can fail


def test_no_save_widens_a_file_mode(tmp_path):
    assert fuzz.modes_widened(tmp_path) == 0
