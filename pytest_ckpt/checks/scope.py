"""Where a check runs: its directory, and the process group its DistributedDataParallel variations need.

A script calls ``pc.check_roundtrip(..., variation="ddp")`` without knowing about process groups:
the check opens a one-process gloo group on first use (rendezvous through a file in its directory)
and closes it before it returns; a group the caller opened is used and left open.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..processes.ranks import ProcessGroupScope
from ..processes.scratch import owned_dir


@contextmanager
def check_scope(workdir: str | Path | None, kind: str,
                process_group: Callable[[], None] | None = None) -> Iterator[tuple[Path, Callable[[], None]]]:
    """``(directory, open_group)``: ``workdir`` (created), else a temporary directory removed afterwards
    (``pytest-ckpt-<kind>-<pid>-...``: a killed run's is removed by the next one);
    ``open_group()`` opens (or reuses) the process group, closed on exit when it was opened here.
    ``process_group``: the caller's own ``open_group`` (the pytest fixture's, closed after the test)."""
    with ExitStack() as stack:
        if workdir is None:
            directory = owned_dir(kind)
            stack.callback(shutil.rmtree, directory, ignore_errors=True)
        else:
            directory = Path(workdir)
            directory.mkdir(parents=True, exist_ok=True)
        if process_group is None:
            process_group = stack.enter_context(ProcessGroupScope(directory)).ensure
        yield directory, process_group
