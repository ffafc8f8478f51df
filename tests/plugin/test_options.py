"""The plugin's surface: marker, options, ini keys, selection, usage errors, ``-p no:ckpt``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_ckpt.plugin
from pytest_ckpt.plugin import options as o
from pytest_ckpt.checks.variations import DEFAULT, VARIATIONS

pytest_plugins = ["pytester"]

# A marked test that only reports its variation: selection is tested without saving anything.
IDS_ONLY = """
import pytest

@pytest.mark.ckpt_roundtrip()
def test_default(ckpt):
    assert ckpt.variation

@pytest.mark.ckpt_roundtrip("plain", "ddp")
def test_chosen(ckpt):
    assert ckpt.variation in ("plain", "ddp")
"""


def collected_ids(result) -> list[str]:
    return [line.split("::", 1)[1] for line in result.outlines if "::" in line]


def test_importing_the_plugin_imports_neither_torch_nor_hypothesis():
    code = ("import sys, pytest_ckpt.plugin, pytest_ckpt.plugin.options, pytest_ckpt.checks.variations; "
            "bad = {'torch', 'hypothesis'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_plugin_runs_no_process_and_opens_no_process_group_itself():
    """The pytest edge stays thin: starting processes and process groups is processes/' job (the
    layers contract forbids subprocess and multiprocessing; torch.distributed is a subpackage, which
    import-linter cannot forbid, so it is looked for here)."""
    plugin = Path(pytest_ckpt.plugin.__file__).parent
    found = [f"{path.name}:{n}: {line.strip()}" for path in sorted(plugin.rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), start=1)
             if re.search(r"torch\.distributed|^\s*(import|from) (subprocess|multiprocessing)\b", line)]
    assert not found, found


def test_marker_is_documented(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines([f"@pytest.mark.{o.MARKER}(*variations): *plain, dataparallel*"])
    line = next(l for l in result.stdout.lines if l.startswith(f"@pytest.mark.{o.MARKER}("))
    from pytest_ckpt.checks.variations import VARIATIONS

    assert all(f" {name}," in line or f" {name}." in line for name in VARIATIONS), line


def test_help_documents_options_and_ini_keys(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines([
        "pytest-ckpt:*",
        f"*{o.OPT_UPDATE}*",
        f"*{o.OPT_VARIATIONS}=A,B*",
        f"*{o.OPT_REPORT}=PATH*",
        f"*{o.OPT_AUDIT_LOADS}*",
    ])
    for key in (o.INI_VARIATIONS, o.INI_SNAPSHOT_DIR, o.INI_COMPILE_BACKEND, o.INI_AUDIT_LOADS,
                o.INI_FSDP_TIMEOUT):
        result.stdout.fnmatch_lines([f"  {key} (*"])


def test_marker_parametrizes_with_the_default_nine(pytester):
    pytester.makepyfile(IDS_ONLY)
    result = pytester.runpytest("--collect-only", "-q")
    ids = collected_ids(result)
    assert ids == [f"test_default[ckpt-{n}]" for n in DEFAULT] + [
        "test_chosen[ckpt-plain]", "test_chosen[ckpt-ddp]"]
    assert len(DEFAULT) == 9 and "layers-1" not in DEFAULT and list(VARIATIONS)[9:] == [
        "layers-1", "layers+1", "hf", "reshard-3", "reshard-1", "interrupted"]


def test_option_replaces_defaults_and_narrows_explicit_choices(pytester):
    pytester.makepyfile(IDS_ONLY)
    result = pytester.runpytest("--collect-only", "-q", f"{o.OPT_VARIATIONS}=plain,nested")
    assert collected_ids(result) == [
        "test_default[ckpt-plain]", "test_default[ckpt-nested]", "test_chosen[ckpt-plain]"]


def test_nothing_selected_is_a_visible_skip(pytester):
    pytester.makepyfile(IDS_ONLY)
    result = pytester.runpytest("-rs", f"{o.OPT_VARIATIONS}=nested")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*none of the marker's variations (plain, ddp) is selected by "
                                 "--ckpt-variations=nested*"])


def test_ini_selects_and_command_line_beats_ini(pytester):
    pytester.makepyfile(IDS_ONLY)
    pytester.makeini(f"[pytest]\n{o.INI_VARIATIONS} = ddp, safetensors\n")
    assert collected_ids(pytester.runpytest("--collect-only", "-q")) == [
        "test_default[ckpt-ddp]", "test_default[ckpt-safetensors]", "test_chosen[ckpt-ddp]"]
    assert collected_ids(pytester.runpytest("--collect-only", "-q", f"{o.OPT_VARIATIONS}=plain")) == [
        "test_default[ckpt-plain]", "test_chosen[ckpt-plain]"]


def test_unknown_marker_variation_is_a_collection_error_naming_valid_ones(pytester):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.ckpt_roundtrip("plain", "fdsp")
        def test_x(ckpt):
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*@pytest.mark.ckpt_roundtrip: unknown variation 'fdsp'; valid: plain, dataparallel, ddp,"
        " compile, ddp+compile, compile+ddp, fsdp, nested, safetensors, layers-1, layers+1*"])


def test_marker_keyword_arguments_are_rejected(pytester):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.ckpt_roundtrip(variations=["plain"])
        def test_x(ckpt):
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*takes variation names only, not variations=*valid: plain*"])


@pytest.mark.parametrize("where", ["option", "ini"])
def test_unknown_selected_variation_is_a_usage_error(pytester, where):
    pytester.makepyfile(IDS_ONLY)
    if where == "ini":
        pytester.makeini(f"[pytest]\n{o.INI_VARIATIONS} = plain,zero3\n")
        result = pytester.runpytest()
    else:
        result = pytester.runpytest(f"{o.OPT_VARIATIONS}=plain,zero3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown variation 'zero3'; valid: plain, dataparallel*"])


def test_ckpt_without_the_marker_says_what_is_missing(pytester):
    pytester.makepyfile("def test_x(ckpt):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the ckpt fixture needs @pytest.mark.ckpt_roundtrip(...)*"])


def test_disabled_with_p_no_ckpt(pytester):
    pytester.makepyfile(IDS_ONLY)
    result = pytester.runpytest("-p", "no:ckpt", "--collect-only", "-q")
    assert collected_ids(result) == ["test_default", "test_chosen"]
    result = pytester.runpytest("-p", "no:ckpt")
    result.stdout.fnmatch_lines(["*fixture 'ckpt' not found*"])
    assert o.MARKER not in pytester.runpytest("-p", "no:ckpt", "--markers").stdout.str()
    assert o.OPT_VARIATIONS not in pytester.runpytest("-p", "no:ckpt", "--help").stdout.str()


def test_compile_backend_comes_from_ini(project):
    project.makepyfile(test_backend="""
        import pytest
        from project import Config, build

        @pytest.mark.ckpt_roundtrip("plain", "compile")
        def test_rt(ckpt):
            ckpt.roundtrip(build, config=Config())
    """)
    project.makeini(f"[pytest]\n{o.INI_COMPILE_BACKEND} = no_such_backend\n")
    result = project.runpytest_subprocess(timeout=300)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*no_such_backend*"])


@pytest.mark.parametrize("where, value", [("ini", "soon"), ("env", "-1"), ("env", "inf")])
def test_bad_fsdp_timeout_is_a_usage_error_naming_its_source(pytester, monkeypatch, where, value):
    pytester.makepyfile(IDS_ONLY)
    monkeypatch.delenv(o.ENV_FSDP_TIMEOUT, raising=False)
    if where == "ini":
        pytester.makeini(f"[pytest]\n{o.INI_FSDP_TIMEOUT} = {value}\n")
    else:
        monkeypatch.setenv(o.ENV_FSDP_TIMEOUT, value)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    source = o.INI_FSDP_TIMEOUT if where == "ini" else o.ENV_FSDP_TIMEOUT
    result.stderr.fnmatch_lines([f"*{source}='{value}': expected a positive number of seconds*"])


@pytest.mark.parametrize("ini, env", [("0.5", None), ("600", "0.5")], ids=["ini", "env-beats-ini"])
def test_fsdp_timeout_reaches_the_ranks(project, monkeypatch, ini, env):
    # a half-second limit cannot hold two ranks that import torch: the variation must fail
    # saying which limit it hit and how to raise it
    monkeypatch.delenv(o.ENV_FSDP_TIMEOUT, raising=False)
    if env is not None:
        monkeypatch.setenv(o.ENV_FSDP_TIMEOUT, env)
    project.makepyfile(test_fsdp="""
        import pytest
        from project import Config, build

        @pytest.mark.ckpt_roundtrip("fsdp")
        def test_rt(ckpt):
            ckpt.roundtrip(build, config=Config())
    """)
    project.makeini(f"[pytest]\n{o.INI_FSDP_TIMEOUT} = {ini}\n")
    result = project.runpytest_subprocess(timeout=300)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*ranks did not finish within 0.5s (raise ini {o.INI_FSDP_TIMEOUT} "
                                 f"or env {o.ENV_FSDP_TIMEOUT})*"])
