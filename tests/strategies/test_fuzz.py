"""The fast fuzz profile: every format damaged a few dozen ways, judged by torch, safetensors and
DCP themselves (``make detection`` runs the thorough profile: ``benchmarks/fuzz.py``)."""

import pytest

from tests.strategies import fuzz

#: damaged checkpoints per format in ``make test``: seconds in all, not minutes
CASES = 12


@pytest.mark.parametrize("fmt", fuzz.FORMATS)
def test_damaged_checkpoints_give_a_clear_error_or_what_torch_reads(fmt):
    rows, problems = fuzz.fuzz((fmt,), CASES, seed=0)
    counts = rows[fmt]
    assert sum(counts.values()) == CASES
    bad = {k: counts[k] for k in ("wrong", "raw", "hang", "code executed") if counts[k]}
    assert not bad, f"{bad}: {problems}"
    assert counts["clear error"] > 0  # damage is found at all: the fuzz can fail


def test_no_save_widens_a_file_mode(tmp_path):
    assert fuzz.modes_widened(tmp_path) == 0
