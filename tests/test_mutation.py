"""``make mutation``'s driver (benchmarks/mutation.py): every named mutant still applies to the code,
a stale one stops the run naming it, and a mutant is run in a scratch copy, never in the working
tree, judged by the first test that fails."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _driver():
    # a script, as make runs it: it puts benchmarks/ on the path itself (harness.py, mutants.py)
    spec = importlib.util.spec_from_file_location("_mutation_driver", ROOT / "benchmarks" / "mutation.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # its dataclasses look it up
    spec.loader.exec_module(module)
    return module


mutation = _driver()


def test_every_mutant_applies_once_to_the_code_and_names_tests_that_exist():
    problems = []
    for m in mutation.MUTANTS:
        try:
            mutation.mutate(ROOT, m)
        except mutation.StaleMutant as e:
            problems.append(str(e))
        if m.module not in mutation.TESTS:
            problems.append(f"mutant {m.name}: no tests are mapped to {m.module}")
        for target in mutation.targets(m, mutation.TESTS):
            path, _, param = target.partition("::")
            if not (ROOT / path).exists():
                problems.append(f"mutant {m.name}: {path} does not exist")
            if "[pytest_ckpt." in param:  # a module's doctests: it must hold examples
                module = param[param.index("[") + 1:-1]
                if ">>> " not in (ROOT / (module.replace(".", "/") + ".py")).read_text():
                    problems.append(f"mutant {m.name}: {module} holds no docstring examples")
    names = [m.name for m in mutation.MUTANTS]
    problems += [f"two mutants are named {n}" for n in sorted({n for n in names if names.count(n) > 1})]
    assert not problems, "\n".join(problems)


def test_a_snippet_not_found_exactly_once_stops_the_run_naming_the_mutant(tmp_path):
    (tmp_path / "judge.py").write_text("def same(a, b):\n    return a == b  # a == b\n")
    twice = mutation.Mutant("twice", "judge.py", "a == b", "a != b", "")
    with pytest.raises(mutation.StaleMutant, match=r"mutant twice: its snippet occurs 2 times in judge\.py, "
                                                   r"not once; the code changed: update the mutant in "
                                                   r"benchmarks/mutants\.py"):
        mutation.mutate(tmp_path, twice)
    gone = mutation.Mutant("gone", "judge.py", "a is b", "a is not b", "")
    with pytest.raises(mutation.StaleMutant, match="mutant gone: its snippet occurs 0 times in judge.py"):
        mutation.mutate(tmp_path, gone)
    broken = mutation.Mutant("broken", "judge.py", "return a == b ", "return a ==", "")
    with pytest.raises(mutation.StaleMutant, match=r"mutant broken: judge\.py does not compile with it applied"):
        mutation.mutate(tmp_path, broken)


def test_a_run_is_judged_by_its_exit_and_its_first_failing_test():
    out = "F\n=== short test summary info ===\nFAILED tests/x.py::test_y[central flags] - AssertionError: a - b\n"
    assert mutation.verdict(1, out, "m") == ("killed", "tests/x.py::test_y[central flags]")
    assert mutation.verdict(2, "ERROR tests/x.py - ImportError: no\nInterrupted: 1 error during collection",
                            "m") == ("killed", "tests/x.py")  # a mutant that breaks an import
    assert mutation.verdict(0, "1 passed", "m") == ("survived", "")
    # a failing test's captured output holds a pytester run's own FAILED line: the summary names the test
    inner = ("F\n--- Captured stdout call ---\nFAILED test_field.py::test_issue_example[plain] - a cause\n"
             "=== short test summary info ===\nFAILED tests/plugin/test_field.py::test_causes - assert 1\n")
    assert mutation.verdict(1, inner, "m") == ("killed", "tests/plugin/test_field.py::test_causes")
    assert mutation.verdict(None, "", "m") == ("timeout", "")
    with pytest.raises(mutation.DriverError, match="pytest could not judge mutant m \\(exit code 4\\)"):
        mutation.verdict(4, "ERROR: not found: tests/x.py::test_z", "mutant m")  # a target that does not exist


def test_mutants_run_in_a_scratch_copy_killed_by_the_first_failing_test(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # the runs below need no plugin: start them fast
    # a project of its own: a judge, and tests that catch one slip of it and miss another
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    judge = tmp_path / "pkg" / "judge.py"
    judge.write_text("def same(a, b):\n    return a == b\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_judge.py").write_text(
        "from pkg.judge import same\n\n\ndef test_equal():\n    assert same(1, 1)\n\n\n"
        "def test_unequal():\n    assert not same(1, 2)\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    before = judge.read_bytes(), judge.stat().st_mtime_ns
    flip = mutation.Mutant("flip", "pkg/judge.py", "a == b", "a != b", "equal read as unequal")
    blind = mutation.Mutant("blind", "pkg/judge.py", "return a == b", "return a == b or a is None", "None equal to all")
    outcomes = mutation.run_all(tmp_path, [flip, blind], {"pkg/judge.py": ("tests/test_judge.py",)}, jobs=1,
                                log=lambda *_: None)
    assert [(o.mutant.name, o.status, o.by, o.line) for o in outcomes] == [
        ("flip", "killed", "tests/test_judge.py::test_equal", 2),
        ("blind", "survived", "", 2),
    ]
    assert (judge.read_bytes(), judge.stat().st_mtime_ns) == before  # the working tree is never touched
    table = mutation.table(outcomes, 1.0, 1)
    assert "| flip | pkg/judge.py:2 | equal read as unequal | yes | `tests/test_judge.py::test_equal` |" in table
    assert "| blind | pkg/judge.py:2 | None equal to all | **no** | - |" in table
    assert "2 named mutants at the verdict points of 1 modules" in table and "1 killed" in table
