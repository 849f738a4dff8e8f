"""The examples in the package's docstrings run and print what they show."""

import doctest
import importlib
import pkgutil

import pytest

import skvaeinv

#: Every module of the package (``__main__`` would run the command line on import).
MODULES = sorted(m.name for m in pkgutil.walk_packages(skvaeinv.__path__, "skvaeinv.")
                 if not m.name.endswith("__main__"))


def test_the_examples_are_found():
    # a broken discovery must not pass as "no failures"
    found = sum(len(t.examples)
                for name in MODULES
                for t in doctest.DocTestFinder().find(importlib.import_module(name)))
    assert found >= 70   # as many as when this test was written


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
