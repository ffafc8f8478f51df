"""The examples in the package's docstrings run and print what they show."""

import doctest
import importlib
import pkgutil

import pytest

import pytest_ckpt


def with_examples():
    """Modules whose docstrings hold at least one example that runs (not all ``+SKIP``)."""
    finder = doctest.DocTestFinder()
    for info in pkgutil.walk_packages(pytest_ckpt.__path__, "pytest_ckpt."):
        tests = finder.find(importlib.import_module(info.name))
        if any(not ex.options.get(doctest.SKIP) for t in tests for ex in t.examples):
            yield info.name


@pytest.mark.parametrize("name", sorted(with_examples()))
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted and result.failed == 0, \
        f"{result.failed} of {result.attempted} examples failed in {name}"
