"""Which variations a marked test runs: its marker's own list, narrowed or replaced by ``--ckpt-variations``.

Two markers parametrize tests, each with its own variations: ``ckpt_roundtrip`` (save-side
wrappers and files) and ``ckpt_resume`` (settings of a training run). Some names belong to both
(``plain``, ``compile``, ``ddp``, ``fsdp``), ``fresh-process`` only to resume checks, the others
only to round trips. A selection (``--ckpt-variations=a,b``, else ini ``ckpt_variations``) may name
variations of either marker, and applies to each marked test by the names that marker knows:

- no selection: the marker's arguments, or its default list;
- a marker with arguments: those of its arguments the selection names (the selection narrows);
- a marker without arguments: every variation of that marker the selection names, in the
  selection's order (the selection replaces the default, so ``fsdp`` can be asked for);
- nothing left: one skipped case ``[<prefix>none]`` whose reason says what was selected.

A name neither marker knows is a usage error listing both lists. Torch-free.

>>> select(RESUME, (), ("plain", "nested", "fresh-process"), "--ckpt-variations")
(('plain', 'fresh-process'), None)
>>> select(ROUNDTRIP, ("plain", "ddp"), ("fresh-process",), "--ckpt-variations")[1]
"none of the marker's variations (plain, ddp) is selected by --ckpt-variations=fresh-process"
>>> print(select(RESUME, (), ("nested",), "ckpt_variations")[1])
ckpt_variations=nested selects no resume variation (resume variations: plain, compile, ddp, fresh-process, fsdp, fsdp-reshard-3, fsdp-reshard-1)
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, NamedTuple

from . import options as o
from ..checks.resume_variations import RESUME_DEFAULT, RESUME_VARIATIONS
from ..checks.variations import DEFAULT, VARIATIONS, UnknownVariation


class MarkerKind(NamedTuple):  # not a dataclass: cheap to create at start-up
    """A marker that parametrizes tests by variation, and the variations it knows."""

    marker: str
    #: test ids end ``[<id_prefix><variation>]``
    id_prefix: str
    #: "round-trip" or "resume", as messages say it
    noun: str
    variations: Mapping[str, object]
    default: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.variations)


ROUNDTRIP = MarkerKind(o.MARKER, o.ID_PREFIX, "round-trip", VARIATIONS, DEFAULT)
RESUME = MarkerKind(o.MARKER_RESUME, o.RESUME_ID_PREFIX, "resume", RESUME_VARIATIONS, RESUME_DEFAULT)
KINDS = (ROUNDTRIP, RESUME)


class MarkerError(ValueError):
    """A test's markers cannot be run as written (both variation markers on one test)."""


def marker_kind(node: Any) -> tuple[MarkerKind, Any] | None:
    """The variation marker a test (a pytest node) carries, with its kind, or None; both markers on
    one test raise :class:`MarkerError` naming the test."""
    found = [(kind, mark) for kind in KINDS if (mark := node.get_closest_marker(kind.marker)) is not None]
    if len(found) > 1:
        raise MarkerError(
            f"{node.nodeid}: carries both @pytest.mark.{ROUNDTRIP.marker} and @pytest.mark.{RESUME.marker}; "
            "a test carries one of the two: put the round trip and the resume check in tests of their own")
    return found[0] if found else None


def marker_variations(kind: MarkerKind, args: tuple, kwargs: Mapping) -> tuple[str, ...]:
    """The marker's variation names, validated, in its order (duplicates dropped); ``()`` when it
    names none (its default applies). Raises :class:`UnknownVariation` naming the valid ones.

    >>> marker_variations(RESUME, ("plain", ["ddp", "plain"]), {})
    ('plain', 'ddp')
    >>> marker_variations(RESUME, ("nested",), {})
    Traceback (most recent call last):
    pytest_ckpt.checks.variations.registry.UnknownVariation: @pytest.mark.ckpt_resume: unknown variation 'nested'; valid: plain, compile, ddp, fresh-process, fsdp, fsdp-reshard-3, fsdp-reshard-1 ('nested' is a round-trip variation: @pytest.mark.ckpt_roundtrip)
    """
    where = f"@pytest.mark.{kind.marker}"
    if kwargs:
        raise UnknownVariation(f"{where} takes variation names only, not {', '.join(kwargs)}=; "
                               f"valid: {', '.join(kind.names)}")
    names: list[object] = []
    for arg in args:
        names.extend(arg if isinstance(arg, (list, tuple)) else [arg])
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or name not in kind.variations:
            other = next((k for k in KINDS if k is not kind and isinstance(name, str) and name in k.variations),
                         None)
            hint = f" ({name!r} is a {other.noun} variation: @pytest.mark.{other.marker})" if other else ""
            raise UnknownVariation(f"{where}: unknown variation {name!r}; valid: {', '.join(kind.names)}{hint}")
        if name not in out:
            out.append(name)
    return tuple(out)


def validate_selection(names: Iterable[str], where: str) -> tuple[str, ...]:
    """A selection's names (duplicates dropped), each a variation of one marker or the other.

    >>> validate_selection(["fresh-process", "nested", "plain"], "--ckpt-variations=...")
    ('fresh-process', 'nested', 'plain')
    """
    out: list[str] = []
    for name in names:
        if not any(name in k.variations for k in KINDS):
            valid = " and ".join(f"{', '.join(k.names)} ({k.marker})" for k in KINDS)
            raise UnknownVariation(f"{where}: unknown variation {name!r}; valid: {valid}")
        if name not in out:
            out.append(name)
    return tuple(out)


def select(kind: MarkerKind, chosen: tuple[str, ...], selection: tuple[str, ...] | None,
           source: str) -> tuple[tuple[str, ...], str | None]:
    """``(names to run, None)``, or ``((), why none runs)``: the rule in this module's docstring.

    ``chosen``: the marker's own arguments (``()``: none given); ``source``: where the selection
    came from, for the reason (``--ckpt-variations`` or ``ckpt_variations``).
    """
    if selection is None:
        return (chosen or kind.default), None
    if chosen:
        names = tuple(n for n in chosen if n in selection)
        why = (f"none of the marker's variations ({', '.join(chosen)}) is selected by "
               f"{source}={','.join(selection)}")
    else:
        names = tuple(n for n in selection if n in kind.variations)
        why = (f"{source}={','.join(selection)} selects no {kind.noun} variation "
               f"({kind.noun} variations: {', '.join(kind.names)})")
    return (names, None) if names else ((), why)
