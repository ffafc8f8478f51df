"""A framework's own training call, run one step at a time.

``Trainer.train()`` and ``Trainer.fit()`` own their loop; the resume check wants to stop after each
step and look. :class:`Driven` runs the call in a thread of its own, and the framework's callback
calls :meth:`Driven.pause` at each step boundary: the training thread waits there while the check
reads the state, then goes on when the check asks for the next step. Exactly one of the two threads
runs at any time, so the state read is never being written; nothing in the framework's code changes.
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class Stopped(BaseException):
    """Raised inside the training thread to end a run the check no longer needs (a BaseException, so a
    framework's ``except Exception`` does not swallow it)."""


class Driven:
    """One training call (``fn()``), advanced from pause to pause.

    >>> d = Driven("count")
    >>> seen = []
    >>> def fn():
    ...     for i in range(3):
    ...         d.pause()
    ...         seen.append(i)
    >>> d.advance(fn), d.advance(), seen   # first call: runs to the first pause
    (True, True, [0])
    >>> d.advance(), d.advance(), seen     # the last: the call returned
    (True, False, [0, 1, 2])
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._cv = threading.Condition()
        self._state = "new"  # new -> running <-> paused -> done
        self._stop = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.result: Any = None

    @property
    def started(self) -> bool:
        return self._state != "new"

    @property
    def done(self) -> bool:
        return self._state == "done"

    def advance(self, fn: Callable[[], Any] | None = None) -> bool:
        """Run to the next pause: ``True`` when paused there, ``False`` when the call has returned.

        The first call starts ``fn`` in its own thread. An exception the call raised is raised here.
        """
        with self._cv:
            if self._state == "new":
                if fn is None:
                    raise RuntimeError(f"{self.name} has not started")
                self._thread = threading.Thread(target=self._run, args=(fn,), name=f"pytest-ckpt {self.name}",
                                                daemon=True)
                self._state = "running"
                self._thread.start()
            elif self._state == "paused":
                self._state = "running"
                self._cv.notify_all()
            elif self._state == "done":
                return False
            self._cv.wait_for(lambda: self._state in ("paused", "done"))
            if self._state == "done" and self.error is not None:
                error, self.error = self.error, None
                raise error
            return self._state == "paused"

    def pause(self) -> None:
        """Called in the training thread, by the framework's callback: wait until the check asks for more."""
        with self._cv:
            if self._stop:
                raise Stopped(self.name)
            self._state = "paused"
            self._cv.notify_all()
            self._cv.wait_for(lambda: self._state == "running" or self._stop)
            if self._stop:
                raise Stopped(self.name)

    def stop(self) -> None:
        """End the call where it is (it unwinds from its pause) and wait for its thread."""
        with self._cv:
            if self._state in ("new", "done"):
                return
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the check's thread, raised there
            self.error = exc
        finally:
            with self._cv:
                self._state = "done"
                self._cv.notify_all()
