"""``plain``: the run as ``start`` builds it."""

from .base import ResumeSide

PLAIN = ResumeSide()
