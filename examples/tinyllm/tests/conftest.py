import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # small models: one thread each is fastest

from tinyllm import drifts  # noqa: E402

# The demo runs this same suite once per drift: TINYLLM_DRIFT=<name> patches one function.
DRIFT = drifts.apply_from_environment()


def pytest_report_header(config):
    return f"tinyllm drift: {DRIFT or 'none (clean)'}"
