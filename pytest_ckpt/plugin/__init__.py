"""pytest-ckpt's pytest entry point: options, the ``ckpt_roundtrip`` marker, the ``ckpt`` fixture.

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
from .collector import CheckCollector
from .variations import DEFAULT, VARIATIONS, UnknownVariation, validate

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
        help="Run only these round-trip variations (valid: " + ", ".join(VARIATIONS)
        + "). Overrides the ini option ckpt_variations.",
    )
    group.addoption(
        o.OPT_REPORT, default=None, dest=o.DEST_REPORT, metavar="PATH",
        help="Write a JSON report of every round trip and snapshot check to PATH.",
    )
    group.addoption(
        o.OPT_AUDIT_LOADS, action="store_true", default=None, dest=o.DEST_AUDIT_LOADS,
        help="Fail any test in which load_state_dict(strict=False) silently dropped keys.",
    )
    parser.addini(o.INI_VARIATIONS, "ckpt: round-trip variations to run (comma-separated)",
                  type="string", default="")
    parser.addini(o.INI_SNAPSHOT_DIR, "ckpt: directory of golden schema snapshots, beside each test file",
                  type="string", default=o.DEFAULT_SNAPSHOT_DIR)
    parser.addini(o.INI_COMPILE_BACKEND, "ckpt: torch.compile backend of the compile variations",
                  type="string", default=o.DEFAULT_COMPILE_BACKEND)
    parser.addini(o.INI_AUDIT_LOADS, "ckpt: like --ckpt-audit-loads", type="bool", default=False)
    parser.addini(o.INI_FSDP_TIMEOUT, f"ckpt: seconds the fsdp variation's 2 ranks may take "
                  f"(default {o.DEFAULT_FSDP_TIMEOUT:.0f}; env {o.ENV_FSDP_TIMEOUT} overrides)",
                  type="string", default="")


def read_settings(config: pytest.Config) -> o.Settings:
    """Options over ini keys; raises ``UnknownVariation`` on a name that is not a variation."""
    variations, source = None, ""
    cli = o.split_names(config.getoption(o.DEST_VARIATIONS))
    ini = o.split_names(config.getini(o.INI_VARIATIONS))
    if cli:
        variations, source = validate(cli, f"{o.OPT_VARIATIONS}={','.join(cli)}"), o.OPT_VARIATIONS
    elif ini:
        variations, source = validate(ini, f"ini {o.INI_VARIATIONS}"), o.INI_VARIATIONS
    audit = config.getoption(o.DEST_AUDIT_LOADS)
    try:
        fsdp_timeout = o.fsdp_timeout(os.environ.get(o.ENV_FSDP_TIMEOUT), config.getini(o.INI_FSDP_TIMEOUT))
    except ValueError as exc:
        raise pytest.UsageError(f"pytest-ckpt: {exc}") from None
    return o.Settings(
        variations=variations,
        variations_source=source,
        update=bool(config.getoption(o.DEST_UPDATE)),
        report=config.getoption(o.DEST_REPORT),
        audit_loads=bool(config.getini(o.INI_AUDIT_LOADS) if audit is None else audit),
        snapshot_dir=config.getini(o.INI_SNAPSHOT_DIR) or o.DEFAULT_SNAPSHOT_DIR,
        compile_backend=config.getini(o.INI_COMPILE_BACKEND) or o.DEFAULT_COMPILE_BACKEND,
        fsdp_timeout=fsdp_timeout,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{o.MARKER}(*variations): run the test once per checkpoint save-side variation "
        f"(ids [ckpt-<variation>]) with the `ckpt` fixture's roundtrip(); no arguments: "
        f"{', '.join(DEFAULT)}. Also: layers-1, layers+1.",
    )
    try:
        config.stash[SETTINGS_KEY] = read_settings(config)
    except UnknownVariation as exc:
        raise pytest.UsageError(str(exc)) from None
    if _is_xdist_worker(config):
        return  # the controller collects from the reports the workers send
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

def marker_variations(marker: pytest.Mark) -> tuple[str, ...]:
    """The marker's variation names (validated), or the default nine."""
    if marker.kwargs:
        raise UnknownVariation(
            f"@pytest.mark.{o.MARKER} takes variation names only, not {', '.join(marker.kwargs)}=; "
            f"valid: {', '.join(VARIATIONS)}"
        )
    names: list[object] = []
    for arg in marker.args:
        names.extend(arg if isinstance(arg, (list, tuple)) else [arg])
    return validate(names, f"@pytest.mark.{o.MARKER}") if names else DEFAULT


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(o.MARKER)
    if marker is None:
        return
    settings = metafunc.config.stash[SETTINGS_KEY]
    try:
        own = marker_variations(marker)
    except UnknownVariation as exc:
        pytest.fail(str(exc), pytrace=False)
    if settings.variations is None:
        names = own
    elif marker.args:  # the marker chose: the option narrows that choice
        names = tuple(n for n in own if n in settings.variations)
    else:  # the marker left it to the defaults: the option replaces them
        names = settings.variations
    if VARIATION_FIXTURE not in metafunc.fixturenames:
        metafunc.fixturenames.append(VARIATION_FIXTURE)
    if names:
        params = [pytest.param(n, id=f"{o.ID_PREFIX}{n}") for n in names]
    else:
        reason = (f"none of the marker's variations ({', '.join(own)}) is selected by "
                  f"{settings.variations_source}={','.join(settings.variations or ())}")
        params = [pytest.param(None, id=f"{o.ID_PREFIX}none", marks=pytest.mark.skip(reason=reason))]
    metafunc.parametrize(VARIATION_FIXTURE, params, indirect=True)


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture
def _ckpt_variation(request: pytest.FixtureRequest) -> str:
    name = getattr(request, "param", None)
    if name is None:
        pytest.fail(
            f"the ckpt fixture needs @pytest.mark.{o.MARKER}(...) on the test "
            "to know which variations to run",
            pytrace=False,
        )
    request.node.user_properties.append((o.PROP_VARIATION, name))
    return name


@pytest.fixture
def ckpt(request: pytest.FixtureRequest, _ckpt_variation: str, tmp_path) -> Iterator[object]:
    """This variation's round trip: ``ckpt.roundtrip(factory, config=..., save=..., load=...)``.

    >>> @pytest.mark.ckpt_roundtrip()                        # doctest: +SKIP
    ... def test_checkpoint(ckpt):
    ...     ckpt.roundtrip(build_model, config=Config(), load=load_for_inference)
    """
    from .roundtrip import Ckpt
    from .variations.processes import ProcessGroupScope

    settings = request.config.stash[SETTINGS_KEY]
    directory = tmp_path / ".ckpt"
    scope = ProcessGroupScope(directory)
    node = request.node
    try:
        yield Ckpt(
            _ckpt_variation,
            directory=directory,
            compile_backend=settings.compile_backend,
            fsdp_timeout=settings.fsdp_timeout,
            process_group=scope.ensure,
            record=lambda entry: node.user_properties.append((o.PROP_ROUNDTRIP, entry)),
        )
    finally:
        scope.close()


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

    with LoadAudit() as audit:
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
            "check its report",
            pytrace=False,
        )
    return result


def pytest_unconfigure(config: pytest.Config) -> None:
    summary = config.stash.get(SUMMARY_KEY, None)
    if summary is not None and config.pluginmanager.is_registered(summary):
        config.pluginmanager.unregister(summary)
