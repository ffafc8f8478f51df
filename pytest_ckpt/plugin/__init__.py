"""pytest-ckpt's pytest entry point: options, the ``ckpt_roundtrip`` and ``ckpt_resume`` markers, the ``ckpt`` fixture.

Loaded by pytest in every project that has the package installed, so it
imports neither torch nor hypothesis; the fixtures import what they need
when a test asks for them. ``-p no:ckpt`` turns all of it off.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from . import options as o
from .collector import DEFINED_KEY, CheckCollector, defined_tests
from ..checks.resume_variations import RESUME_DEFAULT
from .selection import RESUME, MarkerError, marker_kind, marker_variations, select, validate_selection
from ..checks.variations import DEFAULT, VARIATIONS, UnknownVariation
from ..processes import world

#: the session's resolved options
SETTINGS_KEY = pytest.StashKey[o.Settings]()
#: the terminal summary's tally, registered as a plugin object
SUMMARY_KEY = pytest.StashKey["CheckCollector"]()

VARIATION_FIXTURE = "_ckpt_variation"


# -- options and settings ------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(o.GROUP, "pytest-ckpt: checkpoint round trips and schema snapshots")
    group.addoption(
        o.OPT_UPDATE, action="store_true", default=False, dest=o.DEST_UPDATE,
        help="Write the golden schema snapshots instead of comparing with them.",
    )
    group.addoption(
        o.OPT_VARIATIONS, default=None, dest=o.DEST_VARIATIONS, metavar="A,B",
        help="Run only these variations, of either marker (round trip: " + ", ".join(VARIATIONS)
        + "; resume: " + ", ".join(RESUME.names) + "). Overrides the ini option ckpt_variations.",
    )
    group.addoption(
        o.OPT_REPORT, default=None, dest=o.DEST_REPORT, metavar="PATH",
        help="Write a JSON report of every round trip, resume check and snapshot check to PATH.",
    )
    group.addoption(
        o.OPT_AUDIT_LOADS, action="store_true", default=None, dest=o.DEST_AUDIT_LOADS,
        help="Fail any test in which load_state_dict(strict=False) silently dropped keys.",
    )
    parser.addini(o.INI_VARIATIONS, "ckpt: variations to run, of either marker (comma-separated)",
                  type="string", default="")
    parser.addini(o.INI_SNAPSHOT_DIR, "ckpt: directory of golden schema snapshots, beside each test file",
                  type="string", default=o.DEFAULT_SNAPSHOT_DIR)
    parser.addini(o.INI_COMPILE_BACKEND, "ckpt: torch.compile backend of the compile variations",
                  type="string", default=o.DEFAULT_COMPILE_BACKEND)
    parser.addini(o.INI_AUDIT_LOADS, "ckpt: like --ckpt-audit-loads", type="bool", default=False)
    parser.addini(o.INI_AUDIT_ALLOW, "ckpt: name patterns (fnmatch) a load_state_dict(strict=False) "
                  "may drop on purpose: --ckpt-audit-loads ignores them", type="linelist", default=[])
    parser.addini(o.INI_FSDP_TIMEOUT, f"ckpt: seconds the fsdp variation's 2 ranks may take "
                  f"(default {o.DEFAULT_FSDP_TIMEOUT:.0f}; env {o.ENV_FSDP_TIMEOUT} overrides)",
                  type="string", default="")


def read_settings(config: pytest.Config) -> o.Settings:
    """Options over ini keys; raises ``UnknownVariation`` on a name that is not a variation."""
    variations, source = None, ""
    cli = o.split_names(config.getoption(o.DEST_VARIATIONS))
    ini = o.split_names(config.getini(o.INI_VARIATIONS))
    if cli:
        variations, source = validate_selection(cli, f"{o.OPT_VARIATIONS}={','.join(cli)}"), o.OPT_VARIATIONS
    elif ini:
        variations, source = validate_selection(ini, f"ini {o.INI_VARIATIONS}"), o.INI_VARIATIONS
    audit = config.getoption(o.DEST_AUDIT_LOADS)
    report = config.getoption(o.DEST_REPORT)
    problem = o.report_path_problem(report, is_dir=report is not None and os.path.isdir(report))
    if problem:
        raise pytest.UsageError(f"pytest-ckpt: {problem}")
    try:
        fsdp_timeout = o.fsdp_timeout(os.environ.get(o.ENV_FSDP_TIMEOUT), config.getini(o.INI_FSDP_TIMEOUT))
    except ValueError as exc:
        raise pytest.UsageError(f"pytest-ckpt: {exc}") from None
    return o.Settings(
        variations=variations,
        variations_source=source,
        update=bool(config.getoption(o.DEST_UPDATE)),
        report=report,
        audit_loads=bool(config.getini(o.INI_AUDIT_LOADS) if audit is None else audit),
        audit_allow=tuple(p for p in config.getini(o.INI_AUDIT_ALLOW) if p.strip()),
        snapshot_dir=config.getini(o.INI_SNAPSHOT_DIR) or o.DEFAULT_SNAPSHOT_DIR,
        compile_backend=config.getini(o.INI_COMPILE_BACKEND) or o.DEFAULT_COMPILE_BACKEND,
        fsdp_timeout=fsdp_timeout,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{o.MARKER}(*variations): run the test once per checkpoint save-side variation "
        f"(ids [ckpt-<variation>]) with the `ckpt` fixture's roundtrip(); no arguments: "
        f"{', '.join(DEFAULT)}. Also: {', '.join(n for n in VARIATIONS if n not in DEFAULT)}.",
    )
    config.addinivalue_line(
        "markers",
        f"{o.MARKER_RESUME}(*variations): run the test once per setting of a training run "
        f"(ids [resume-<variation>]) with the `ckpt` fixture's resume(start, step, save=, load=): training "
        f"stopped and resumed must be the training that never stopped; no arguments: "
        f"{', '.join(RESUME_DEFAULT)}. Also: fsdp, fsdp-reshard-3, fsdp-reshard-1.",
    )
    config.addinivalue_line(
        "markers",
        f"{o.MARKER_AUDIT_ALLOW}(*patterns): names (fnmatch patterns) this test's "
        f"load_state_dict(strict=False) calls may drop on purpose; {o.OPT_AUDIT_LOADS} ignores them",
    )
    try:
        config.stash[SETTINGS_KEY] = read_settings(config)
    except UnknownVariation as exc:
        raise pytest.UsageError(str(exc)) from None
    if world.launched() and (_is_xdist_worker(config) or getattr(config.option, "numprocesses", None)
                             or getattr(config.option, "dist", "no") != "no"):
        raise pytest.UsageError(
            f"pytest-ckpt: under torchrun (rank {world.rank()} of {world.size()}) every rank must run the "
            "same tests in the same order, as one pytest: leave out -n/--dist (pytest-xdist), e.g. "
            "torchrun --nproc-per-node N -m pytest -p no:xdist")
    if _is_xdist_worker(config):
        return  # the controller collects from the reports the workers send
    if world.launched():  # under torchrun: the ranks agree on each outcome; rank 0 alone summarizes
        from .launched import LaunchedWorld

        config.pluginmanager.register(LaunchedWorld(), "ckpt-launched-world")
        if world.rank() != 0:
            return
    settings = config.stash[SETTINGS_KEY]
    summary = config.stash[SUMMARY_KEY] = CheckCollector(
        report_path=settings.report, update=settings.update,
        snapshot_dir=settings.snapshot_dir, workers=_xdist_workers(config),
    )
    config.pluginmanager.register(summary, "ckpt-checks")


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _xdist_workers(config: pytest.Config) -> int:
    n = getattr(config.option, "numprocesses", None)
    return n if isinstance(n, int) else 0


# -- parametrization -----------------------------------------------------------------------

def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    message = None
    try:
        found = marker_kind(metafunc.definition)
        if found is None:
            return
        kind, marker = found
        own = marker_variations(kind, marker.args, marker.kwargs)
    except (UnknownVariation, MarkerError) as exc:
        message = str(exc)
    if message is not None:  # outside the except: the error is shown once, not with its context
        pytest.fail(message, pytrace=False)
    settings = metafunc.config.stash[SETTINGS_KEY]
    names, why = select(kind, own, settings.variations, settings.variations_source)
    if VARIATION_FIXTURE not in metafunc.fixturenames:
        metafunc.fixturenames.append(VARIATION_FIXTURE)
    if names:
        params = [pytest.param(n, id=f"{kind.id_prefix}{n}") for n in names]
    else:
        params = [pytest.param(None, id=f"{kind.id_prefix}none", marks=pytest.mark.skip(reason=why))]
    metafunc.parametrize(VARIATION_FIXTURE, params, indirect=True)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items) -> None:
    """Under --ckpt-update: which tests each module defines, before -k deselects any, so that
    the snapshots of tests not run are not called unused (workers send theirs to the controller)."""
    if not config.stash[SETTINGS_KEY].update:
        return
    defined = defined_tests(items)
    if _is_xdist_worker(config):
        config.workeroutput[DEFINED_KEY] = defined
    elif SUMMARY_KEY in config.stash:
        for path, names in defined.items():
            config.stash[SUMMARY_KEY].defined[path].update(names)


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture
def _ckpt_variation(request: pytest.FixtureRequest) -> str:
    name = getattr(request, "param", None)
    if name is None:
        pytest.fail(
            f"the ckpt fixture needs @pytest.mark.{o.MARKER}(...) (round trips) or "
            f"@pytest.mark.{o.MARKER_RESUME}(...) (resume checks) on the test to know which variations to run",
            pytrace=False,
        )
    resume = request.node.get_closest_marker(o.MARKER_RESUME) is not None
    request.node.user_properties.append((o.PROP_RESUME_VARIATION if resume else o.PROP_VARIATION, name))
    return name


@pytest.fixture
def ckpt(request: pytest.FixtureRequest, _ckpt_variation: str, tmp_path) -> Iterator[object]:
    """This variation's round trip, ``ckpt.roundtrip(factory, config=..., save=..., load=...)``, or
    under ``@pytest.mark.ckpt_resume`` its resume check, ``ckpt.resume(start, step, save=..., load=...)``.

    >>> @pytest.mark.ckpt_roundtrip()                        # doctest: +SKIP
    ... def test_checkpoint(ckpt):
    ...     ckpt.roundtrip(build_model, config=Config(), load=load_for_inference)
    >>> @pytest.mark.ckpt_resume()                           # doctest: +SKIP
    ... def test_resume(ckpt):
    ...     ckpt.resume(start, step, save=save, load=load, config=Config())
    """
    from .fixture import Ckpt, CkptResume
    from .progress import terminal_line

    settings = request.config.stash[SETTINGS_KEY]
    node = request.node
    if node.get_closest_marker(o.MARKER_RESUME) is not None:
        fixture, prop = CkptResume, o.PROP_RESUME
    else:
        fixture, prop = Ckpt, o.PROP_ROUNDTRIP
    checks = fixture(
        _ckpt_variation,
        directory=tmp_path / ".ckpt",
        compile_backend=settings.compile_backend,
        fsdp_timeout=settings.fsdp_timeout,
        record=lambda entry: node.user_properties.append((prop, entry)),
        progress=terminal_line(request.config),
    )
    try:
        yield checks
    finally:
        checks.close()


@pytest.fixture
def ckpt_snapshot(request: pytest.FixtureRequest):
    """Golden schema snapshot of this test: ``ckpt_snapshot.assert_match(source, name=None)``.

    >>> def test_architecture(ckpt_snapshot):                 # doctest: +SKIP
    ...     ckpt_snapshot.assert_match(build_model(Config()))
    """
    from .snapshot import CkptSnapshot

    settings = request.config.stash[SETTINGS_KEY]
    node = request.node
    return CkptSnapshot(
        test_file=Path(node.path),
        test_name=node.name,
        snapshot_dir=settings.snapshot_dir,
        update=settings.update,
        record=lambda entry: node.user_properties.append((o.PROP_SNAPSHOT, entry)),
    )


# -- strict-load audit ---------------------------------------------------------------------

@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    if not item.config.stash[SETTINGS_KEY].audit_loads:
        return (yield)
    from .audit import LoadAudit

    marker = item.get_closest_marker(o.MARKER_AUDIT_ALLOW)
    allow = item.config.stash[SETTINGS_KEY].audit_allow + tuple(
        str(p) for p in (marker.args if marker is not None else ()))
    with LoadAudit(allow=allow) as audit:
        try:
            result = yield
        except BaseException as exc:
            # the test failed anyway: still say what was dropped, it is often why
            if audit.dropped:
                exc.add_note("\n".join([f"{o.OPT_AUDIT_LOADS}: load_state_dict(strict=False) "
                                         "also silently dropped keys:"]
                                        + [f"  {d.describe()}" for d in audit.dropped]))
                item.user_properties.append((o.PROP_AUDIT, audit.dropped[0].describe()))
            raise
    if audit.dropped:
        lines = [d.describe() for d in audit.dropped]
        item.user_properties.append((o.PROP_AUDIT, lines[0]))
        pytest.fail(
            f"{o.OPT_AUDIT_LOADS}: {len(lines)} load_state_dict(strict=False) call(s) silently "
            "dropped keys:\n" + "\n".join(f"  {line}" for line in lines)
            + "\n  fix: load strictly, or use pytest_ckpt.load_into(model, path, strict=False) and "
            f"check its report; a drop that is intended: @pytest.mark.{o.MARKER_AUDIT_ALLOW}"
            f"(\"<name pattern>\") on the test, or ini {o.INI_AUDIT_ALLOW}",
            pytrace=False,
        )
    return result


# -- short failures ------------------------------------------------------------------------------

#: packages whose frames a round trip's failure never shows: their code is not where the bug is
HIDDEN_PACKAGES = ("torch", "transformers", "safetensors")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failure in a test that uses pytest-ckpt shows the test's line and the project's own
    frames: torch's internal frames (140 lines of ``load_state_dict`` source) are hidden, as
    pytest-ckpt's own are, in the failure and in the project's error it was raised from (a
    resume check's ``ResumeError``), unless ``--fulltrace``."""
    excinfo = call.excinfo
    if (excinfo is not None and not item.config.getoption("fulltrace", False)
            and _uses_ckpt(item, excinfo.value)):
        try:
            if _cut_library_tail(excinfo.tb):
                # pytest cuts tracebacks from the raw frames: rebuild its view of them
                excinfo.traceback = type(excinfo.traceback)(excinfo.tb)
            ours = _own_dir()
            kept = excinfo.traceback.filter(lambda entry: not str(entry.path).startswith(ours))
            if len(kept):
                excinfo.traceback = kept
            _cut_own_head(excinfo.value)
            if item.config.get_verbosity() < 2:
                _shorten_load_error(excinfo.value)
        except Exception:  # noqa: BLE001 - a full traceback is better than none
            pass
    return (yield)


def _shorten_load_error(exc: BaseException) -> None:
    """torch's ``load_state_dict`` error lists every key and one line per size mismatch:
    cut the lists (with their count and block runs) and the runs of lines; -vv keeps all."""
    text = str(exc)
    if not (isinstance(exc, RuntimeError) and "Error(s) in loading state_dict" in text
            and len(exc.args) == 1):
        return
    from ..compare.load_error import shorten

    short = shorten(text)
    if short != text.expandtabs(2):
        exc.args = (short + "\n(shortened by pytest-ckpt; -vv shows every key)",)


def _cut_library_tail(tb) -> bool:
    """End the traceback at its last frame of the project's own code: the frames after it
    are torch's (or transformers', or pytest-ckpt's hidden ones). True when it cut any."""
    hidden = _hidden_dirs()
    last_own = None
    while tb is not None:
        frame = tb.tb_frame
        if not (frame.f_code.co_filename.startswith(hidden) or frame.f_locals.get("__tracebackhide__")):
            last_own = tb
        tb = tb.tb_next
    if last_own is None or last_own.tb_next is None:
        return False
    last_own.tb_next = None
    return True


def _cut_own_head(exc: BaseException) -> None:
    """The project's error a failure was raised from starts where pytest-ckpt called the project's
    function: drop pytest-ckpt's frames before it, so the traceback starts in the project's code."""
    ours, seen = _own_dir(), set()
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        tb = cause.__traceback__
        while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename.startswith(ours):
            tb = tb.tb_next
        cause.__traceback__ = tb
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)


def _own_dir() -> str:
    """pytest-ckpt's own package directory, with a trailing separator."""
    from .audit import PACKAGE_DIR

    return PACKAGE_DIR


def _uses_ckpt(item: pytest.Item, exc: BaseException) -> bool:
    from_roundtrip = getattr(exc, o.ATTR_TRIM, False)
    return bool(from_roundtrip) or bool({"ckpt", "ckpt_snapshot"} & set(getattr(item, "fixturenames", ())))


def _hidden_dirs() -> tuple[str, ...]:
    import sys

    dirs = [_own_dir()]
    for name in HIDDEN_PACKAGES:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path:
            dirs.append(os.path.dirname(os.path.abspath(path)) + os.sep)
    return tuple(dirs)


def pytest_unconfigure(config: pytest.Config) -> None:
    summary = config.stash.get(SUMMARY_KEY, None)
    if summary is not None and config.pluginmanager.is_registered(summary):
        config.pluginmanager.unregister(summary)
