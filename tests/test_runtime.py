"""skvaeinv.runtime.tune_allocator: process-wide, so every check runs in a fresh process."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from skvaeinv.runtime import MAX_MMAP_THRESHOLD, tune_allocator

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="glibc's mallopt is a Linux feature")
glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="tune_allocator sets glibc's malloc (not musl's)")


def _python(code: str) -> str:
    """Run ``code`` in a fresh interpreter with glibc's default malloc settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True,
                         capture_output=True, text=True, timeout=120, env=env)
    return out.stdout.strip()


# A training step in miniature: hold eight 16 MB activations, then free them all, and
# count the page faults of the later rounds. Transparent huge pages are switched off for
# the process (and numpy's request for them), so a fresh buffer costs one fault a page.
_FAULTS = """
import ctypes, resource
import numpy as np
try:
    ctypes.CDLL(None, use_errno=True).prctl(41, 1, 0, 0, 0)   # PR_SET_THP_DISABLE
except (AttributeError, OSError):
    pass
core = getattr(np, "_core", None) or np.core
if hasattr(core.multiarray, "_set_madvise_hugepage"):
    core.multiarray._set_madvise_hugepage(False)
{setup}
def step():
    buffers = [np.ones(2_000_000) for _ in range(8)]
    del buffers
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@linux_only
@glibc_only
def test_tuned_allocator_keeps_freed_buffers():
    tuned = int(_python(_FAULTS.format(
        setup="from skvaeinv.runtime import tune_allocator; assert tune_allocator()")))
    # untuned, glibc hands the freed 128 MB back each round and takes them again page
    # by page: 20 rounds x 8 buffers x the pages of 16 MB (3,907 of 4 KiB)
    import resource   # Unix only

    untuned = int(_python(_FAULTS.format(setup="")))
    expected = 20 * 8 * math.ceil(16e6 / resource.getpagesize())
    assert untuned > 0.5 * expected, (untuned, expected)
    assert tuned < 0.01 * expected, (tuned, expected)


@linux_only
@glibc_only
def test_settings_reach_child_processes():
    out = _python("""
        import os, subprocess, sys
        from skvaeinv.runtime import tune_allocator
        assert tune_allocator(mmap_threshold=2**24, trim_threshold=2**33)
        print(subprocess.run([sys.executable, "-c",
              "import os; print(os.environ['MALLOC_MMAP_THRESHOLD_'],"
              " os.environ['MALLOC_TRIM_THRESHOLD_'])"],
              capture_output=True, text=True, check=True).stdout)
    """)
    assert out == f"{2**24} {2**33}"


@pytest.mark.parametrize("kwargs, match", [
    ({"mmap_threshold": 0}, "mmap_threshold must be a positive integer"),
    ({"mmap_threshold": 1.5e6}, "mmap_threshold must be a positive integer"),
    ({"trim_threshold": -1}, "trim_threshold must be a positive integer"),
    ({"trim_threshold": True}, "trim_threshold must be a positive integer"),
    ({"mmap_threshold": MAX_MMAP_THRESHOLD + 1}, "exceeds glibc's limit"),
])
def test_bad_thresholds(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tune_allocator(**kwargs)


def test_console_script_entry_tunes_only_its_own_process(monkeypatch):
    """``skvaeinv.cli.main`` (used in-process by tests and scripts) leaves malloc alone;
    ``run`` (the console script) tunes it."""
    import skvaeinv.cli as cli

    calls = []
    monkeypatch.setattr(cli, "tune_allocator", lambda: calls.append(1) or True)
    monkeypatch.setattr(sys, "argv", ["skvaeinv", "--version"])
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):   # a fresh process's
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert calls == []
    with pytest.raises(SystemExit):
        cli.run()
    assert calls == [1]
    # the user's own malloc settings win
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        with monkeypatch.context() as m:
            m.setenv(name, "0")
            with pytest.raises(SystemExit):
                cli.run()
    assert calls == [1]
