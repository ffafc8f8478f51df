"""A long-lived worker, run by the peers' python (``make peers``), that times pytest-torch's
``assert_resume_equivalent`` in-process, the way ``make bench`` times ``pc.check_resume``: the
interpreter and its imports are paid once, before the first case, never inside a timing.

Each stdin line ``family bug at steps`` (bug ``-`` for the correct loop) runs one case through
:func:`peers._child_pytest_torch` (the adapter the detection table uses) and answers one JSON line:
``{"seconds": in-process wall time, "raised": bool}``.

    .venv-peers/bin/python benchmarks/resume/peer_timer.py < cases
"""

from __future__ import annotations

import json
import sys
import time

import peers


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        family, bug, at, steps = line.split()
        began = time.perf_counter()
        out = peers._check_pytest_torch(family, None if bug == "-" else bug, int(at), int(steps))
        print(json.dumps({"seconds": time.perf_counter() - began, "raised": out["raised"]}), flush=True)


if __name__ == "__main__":
    main()
