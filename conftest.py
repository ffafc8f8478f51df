"""Test-suite settings shared by every test directory."""

import os

# Two cores, two xdist workers: one intra-op thread each avoids oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Hypothesis profiles: "ckpt-fast" for `make test` (the default here), "ckpt-thorough" for
# long local runs (`pytest --hypothesis-profile=ckpt-thorough tests/strategies`);
# benchmarks/detection.py sets its own. No example database: nothing written to the tree.
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a test extra; the suite's strategy tests need it
    pass
else:
    _SLOW_MODELS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    settings.register_profile("ckpt-fast", derandomize=True, max_examples=15, deadline=None,
                              database=None, print_blob=False,
                              suppress_health_check=_SLOW_MODELS)
    settings.register_profile("ckpt-thorough", max_examples=500, deadline=None, database=None,
                              suppress_health_check=_SLOW_MODELS)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ckpt-fast"))


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)
