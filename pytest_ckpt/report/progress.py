"""What a long check is doing, said to whoever listens: a person waiting a minute on one dot.

The checks mark their phases (:func:`doing`) and call :func:`tick` where they wait (each training
step, the poll of a child process or of the ranks). Nothing is said unless a listener is set
(:func:`listening`: the pytest plugin prints the lines), and nothing while the check has said
nothing for less than :data:`QUIET_S` seconds (since it began or since its last line); then a line
when the phase has changed, or every :data:`EVERY_S` seconds while one lasts. Everything runs in the
check's own thread: a listener writes where that thread may.

>>> lines = []
>>> with listening(lines.append, quiet=0.0):
...     doing("resumed half running in a fresh process")
>>> lines
['resumed half running in a fresh process (0 s)']
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

#: a check shorter than this says nothing
QUIET_S = 5.0
#: while one phase lasts, a line at most this often
EVERY_S = 15.0


@dataclass
class _Listener:
    say: Callable[[str], None]
    quiet: float
    began: float = field(default_factory=time.monotonic)
    phase: str = ""
    #: the phase last said, and when
    said: str = ""
    said_at: float = 0.0


_LISTENER: contextvars.ContextVar[_Listener | None] = contextvars.ContextVar("pytest_ckpt_progress", default=None)


@contextlib.contextmanager
def listening(say: Callable[[str], None], *, phase: str = "", quiet: float | None = None) -> Iterator[None]:
    """Within the block, the checks' progress goes to ``say(line)`` (``line``: ``what (12 s)``),
    once they have run ``quiet`` seconds (:data:`QUIET_S`); ``phase``: what they do until they say."""
    token = _LISTENER.set(_Listener(say, QUIET_S if quiet is None else quiet, phase=phase))
    try:
        yield
    finally:
        _LISTENER.reset(token)


def doing(what: str) -> None:
    """The check now does ``what`` (``"second uninterrupted run"``)."""
    listener = _LISTENER.get()
    if listener is not None:
        listener.phase = what
        tick()


def tick() -> None:
    """Where the check waits: says what it does when it is time to (see the module's docstring)."""
    listener = _LISTENER.get()
    if listener is None or not listener.phase:
        return
    now = time.monotonic()
    if now - max(listener.began, listener.said_at) < listener.quiet:
        return  # quiet a while after the start and after each line
    if listener.phase == listener.said and now - listener.said_at < EVERY_S:
        return
    listener.said, listener.said_at = listener.phase, now
    try:
        listener.say(f"{listener.phase} ({now - listener.began:.0f} s)")
    except Exception:  # noqa: BLE001 - a line on screen is never worth a check
        pass
