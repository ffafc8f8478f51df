"""A pytest plugin for the start-up benchmark: after collection, says whether torch or hypothesis got imported."""

import sys


def pytest_collection_finish(session):
    heavy = [m for m in ("torch", "hypothesis", "transformers") if m in sys.modules]
    print("heavy modules imported at collection: " + (", ".join(heavy) or "none"))
