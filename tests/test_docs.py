"""The README's and docs/'s examples run, so the docs cannot rot.

Each Markdown page is run top to bottom in its own temporary directory:

- a ```python block whose first line is ``# file: NAME`` is written to NAME (not run);
- any other ```python block is executed there, in a fresh namespace;
- a ```console block runs each ``$ pytest ...`` (in this process) or
  ``$ pytest-ckpt ...`` command; every other line of the block is expected
  output: it must appear in the real output (in a line with ``...``, each
  ``...`` stands for any text; pytest's final ``N passed/failed/skipped`` line
  is compared by counts);
- other blocks (```sh, ```py, ```json, ```text) are shown, not run.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import shlex
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```\s*$", re.M | re.S)
SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")
#: pages whose examples need an optional extra
NEEDS = {"hypothesis.md": ("hypothesis",), "frameworks.md": ("transformers", "lightning", "peft", "accelerate")}


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(page.read_text(encoding="utf-8"))]


def runnable(page: Path) -> bool:
    return any(lang in ("python", "console") for lang, _ in blocks(page))


def counts(text: str) -> dict[str, int]:
    return {kind.rstrip("s") if kind.startswith("error") else kind: int(n)
            for n, kind in SUMMARY.findall(text)}


def elided(want: str) -> re.Pattern[str]:
    """An expected line whose every ``...`` stands for any text, as a pattern."""
    return re.compile(".*?".join(re.escape(part) for part in want.split("...")))


def check_output(command: str, expected: list[str], actual: str) -> None:
    __tracebackhide__ = True
    actual_lines = [" ".join(l.split()) for l in actual.splitlines()]
    for line in expected:
        want = " ".join(line.split())
        if not want:
            continue
        if SUMMARY.search(want) and re.search(r"\b(passed|failed|skipped)\b", want) and " in " in want:
            last = next((l for l in reversed(actual_lines) if SUMMARY.search(l)), "")
            assert counts(want) == counts(last), f"$ {command}\nexpected {want!r}, got {last!r}\n{actual}"
            continue
        pattern = elided(want)
        assert any(pattern.search(l) for l in actual_lines), f"$ {command}\nmissing line: {want!r}\n--- output:\n{actual}"


def run_pytest(args: list[str], directory: Path) -> str:
    """pytest in this process, output captured; the page's own modules are forgotten afterwards.

    Not ``pytester.runpytest_inprocess``: it unloads every module the run imported.
    """
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        pytest.main([*args, "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:randomly"])
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve().is_relative_to(directory.resolve()):
            del sys.modules[name]
    return out.getvalue()


def run_console(block: str, directory: Path) -> None:
    command, expected = None, []
    steps = []
    for line in block.splitlines():
        if line.startswith("$ "):
            if command is not None:
                steps.append((command, expected))
            command, expected = line[2:], []
        else:
            expected.append(line)
    if command is not None:
        steps.append((command, expected))
    for command, expected in steps:
        argv = shlex.split(command)
        if argv[0] == "pytest":
            output = run_pytest(argv[1:], directory)
        elif argv[0] == "pytest-ckpt":
            from pytest_ckpt import cli

            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                cli.main(argv[1:])
            output = out.getvalue()
        else:
            pytest.fail(f"docs console blocks run pytest or pytest-ckpt only, not: {command}")
        check_output(command, expected, output)


@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch) -> None:
    for module in NEEDS.get(page.name, ()):
        pytest.importorskip(module, reason=f"{page.name}'s examples need {module}")
    # Not the pytester fixture: its teardown unloads every module the test imported, and
    # torch's compiler modules cannot be imported twice in one process.
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # pages rewrite files within a second
    ran = 0
    for number, (lang, code) in enumerate(blocks(page), start=1):
        first = code.splitlines()[0] if code.strip() else ""
        if lang == "python" and first.startswith("# file: "):
            target = tmp_path / first[len("# file: "):].strip()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(code, encoding="utf-8")
            for name in [m for m in sys.modules if m == target.stem]:
                del sys.modules[name]  # another page's module of the same name
            importlib.invalidate_caches()  # the directory changed within the finders' mtime resolution
        elif lang == "python":
            module = types.ModuleType(f"docs_block_{number}")  # a real module: dataclasses need one
            monkeypatch.setitem(sys.modules, module.__name__, module)
            try:
                exec(compile(code, f"{page.name}:block {number}", "exec"), module.__dict__)
            except Exception as exc:
                exc.add_note(f"in {page.relative_to(ROOT)}, python block {number}:\n{code}")
                raise
            ran += 1
        elif lang == "console":
            run_console(code, tmp_path)
            ran += 1
    assert ran, f"{page.name}: no runnable example"


def test_an_elided_line_is_matched_as_a_pattern() -> None:
    output = "E   [hard fail] torn model.pt at 50%: .../tmp/x/model.pt: truncated (file is 812 bytes)\n2 passed in 0.31s"
    check_output("pytest", ["E [hard fail] torn model.pt at 50%: .../model.pt: truncated (file is ... bytes)",
                            "2 passed in ..."], output)
    for wrong in ("E [hard fail] torn model.pt at 90%: .../model.pt: ...", "3 passed in ..."):
        with pytest.raises(AssertionError):
            check_output("pytest", [wrong], output)


def test_every_docs_page_is_linked_from_the_index() -> None:
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "README.md":
            assert f"({page.name})" in index, f"docs/README.md does not link {page.name}"
