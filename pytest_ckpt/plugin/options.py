"""Names of the plugin's marker, options and ini keys, and the settings read from them.

Torch-free: the plugin's own tests import these constants, and pytest imports
the plugin in every project.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Sequence

from ..errors import TRIM_ATTR
#: the fsdp variations' timeout: its default, its ini key and the environment variable that overrides it
from ..processes.timeouts import DEFAULT_FSDP_TIMEOUT, ENV_FSDP_TIMEOUT, INI_FSDP_TIMEOUT

MARKER = "ckpt_roundtrip"
MARKER_RESUME = "ckpt_resume"
#: name patterns whose drop by a load_state_dict(strict=False) is intended (the audit ignores them)
MARKER_AUDIT_ALLOW = "ckpt_audit_allow"
GROUP = "ckpt"

#: command-line options, as pytest spells them and as ``config.getoption`` names them
OPT_UPDATE = "--ckpt-update"
OPT_VARIATIONS = "--ckpt-variations"
OPT_REPORT = "--ckpt-report"
OPT_AUDIT_LOADS = "--ckpt-audit-loads"

DEST_UPDATE = "ckpt_update"
DEST_VARIATIONS = "ckpt_variations"
DEST_REPORT = "ckpt_report"
DEST_AUDIT_LOADS = "ckpt_audit_loads"

#: ini keys
INI_VARIATIONS = "ckpt_variations"
INI_SNAPSHOT_DIR = "ckpt_snapshot_dir"
INI_COMPILE_BACKEND = "ckpt_compile_backend"
INI_AUDIT_LOADS = "ckpt_audit_loads"
INI_AUDIT_ALLOW = "ckpt_audit_allow"

DEFAULT_COMPILE_BACKEND = "eager"
DEFAULT_SNAPSHOT_DIR = "__ckpt_snapshots__"

#: the id of a parametrized case is ``ckpt-<variation>`` (round trips), ``resume-<variation>`` (resume checks)
ID_PREFIX = "ckpt-"
RESUME_ID_PREFIX = "resume-"
#: ``item.user_properties`` keys (they survive pytest-xdist)
PROP_VARIATION = "ckpt_variation"
PROP_ROUNDTRIP = "ckpt_roundtrip"
PROP_SNAPSHOT = "ckpt_snapshot"
PROP_AUDIT = "ckpt_audit"
PROP_RESUME_VARIATION = "ckpt_resume_variation"
PROP_RESUME = "ckpt_resume"
#: set on an exception a round trip re-raises: its torch frames are hidden in the report
ATTR_TRIM = TRIM_ATTR


def split_names(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"plain, nested"`` or ``["plain", "nested"]`` -> ``("plain", "nested")``; empty -> None.

    >>> split_names("plain,nested ddp")
    ('plain', 'nested', 'ddp')
    """
    if text is None:
        return None
    if not isinstance(text, str):
        text = ",".join(text)
    names = tuple(n for n in re.split(r"[\s,]+", text) if n)
    return names or None


def report_path_problem(path: str | None, *, is_dir: bool) -> str | None:
    """Why ``--ckpt-report=PATH`` cannot be written, said before the run; ``None`` if it can.

    >>> print(report_path_problem(".", is_dir=True))
    --ckpt-report=.: is a directory; give a file path, e.g. --ckpt-report=ckpt-report.json
    """
    if path is None:
        return None
    if is_dir or path.endswith(("/", "\\")):
        return (f"{OPT_REPORT}={path}: is a directory; give a file path, "
                f"e.g. {OPT_REPORT}=ckpt-report.json")
    return None


def fsdp_timeout(env: str | None, ini: str | None) -> float:
    """Seconds the FSDP ranks may take: the environment variable, else the ini key, else the
    default. Raises ``ValueError`` naming the source of a bad value.

    >>> fsdp_timeout(None, ""), fsdp_timeout("600", "30"), fsdp_timeout(None, "30")
    (180.0, 600.0, 30.0)
    """
    for source, text in ((ENV_FSDP_TIMEOUT, env), (INI_FSDP_TIMEOUT, ini)):
        if text is None or not text.strip():
            continue
        try:
            seconds = float(text)
        except ValueError:
            seconds = float("nan")
        if not seconds > 0 or seconds == float("inf"):
            raise ValueError(f"{source}={text.strip()!r}: expected a positive number of seconds")
        return seconds
    return DEFAULT_FSDP_TIMEOUT


# NamedTuples, not frozen dataclasses, on the import path of every pytest run: a dataclass costs
# milliseconds to create (issue 25: the plugin adds at most 20 ms to a start-up it is unused in)
class Settings(NamedTuple):
    """What the options and ini keys say, resolved once per session (command line beats ini)."""

    #: variations to run (names of either marker's), or None for each marker's own list
    variations: tuple[str, ...] | None = None
    #: where the selection came from, for messages (``--ckpt-variations`` or ``ckpt_variations``)
    variations_source: str = ""
    update: bool = False
    report: str | None = None
    audit_loads: bool = False
    #: name patterns (fnmatch) a strict=False load may drop on purpose, for every test
    audit_allow: tuple[str, ...] = ()
    snapshot_dir: str = DEFAULT_SNAPSHOT_DIR
    compile_backend: str = DEFAULT_COMPILE_BACKEND
    fsdp_timeout: float = DEFAULT_FSDP_TIMEOUT
