"""What makes CPU training and inversion fast: process settings and machine facts.

:func:`has_native_bfloat16` tells whether ``precision="bfloat16"`` pays off on a device
(``precision="auto"`` uses it to choose); asking for bfloat16 where it is emulated
raises a :class:`SlowPrecisionWarning`, which can be filtered like any warning.

The library itself never changes process-wide state; an application (a script, the
``skvaeinv`` command line, the benchmarks) opts in by calling :func:`tune_allocator`
once, at its start.

Why the allocator: every training step or inversion iteration allocates and frees the
same few activation buffers of several megabytes. glibc's ``malloc`` gives such blocks
back to the operating system when they are freed (``mmap``/``munmap``, or trimming the
heap), and the next step takes them again page by page, one page fault per page.
Keeping freed memory in the heap removes most of these faults. PyTorch's own tuning
guide recommends the same through jemalloc or tcmalloc; this needs neither.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import numbers
import os
import sys

from skvaeinv._device import SlowPrecisionWarning, has_native_bfloat16

__all__ = ["tune_allocator", "has_native_bfloat16", "SlowPrecisionWarning"]

logger = logging.getLogger(__name__)

# mallopt parameters of glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit systems (HEAP_MAX_SIZE / 2).
MAX_MMAP_THRESHOLD = 32 * 2**20


def tune_allocator(mmap_threshold: int = MAX_MMAP_THRESHOLD,
                   trim_threshold: int = 2**34) -> bool:
    """Keep freed memory in the heap (glibc ``malloc``), for this process and its children.

    Sets glibc's ``M_MMAP_THRESHOLD`` (blocks at least this large are mapped and
    unmapped one by one) and ``M_TRIM_THRESHOLD`` (free memory at the top of the heap
    beyond this is returned to the system) with ``mallopt``, and exports the same values
    as ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` so that worker processes
    started afterwards (joblib's, for ``n_jobs``) use them too.

    This is a process-wide setting: call it once at the start of an application (the
    ``skvaeinv`` command line does), before the first parallel fit (joblib keeps its
    workers between calls). It speeds up training and inversion on the CPU, where the
    page faults it avoids are a noticeable share of each step. The cost: memory freed
    by the process is kept for reuse rather than returned to the system, so resident
    memory stays near its peak.

    Parameters
    ----------
    mmap_threshold : int, default=33554432 (32 MiB)
        Allocations at least this large (bytes) bypass the heap. At most 32 MiB, glibc's
        limit.
    trim_threshold : int, default=2**34
        Free bytes at the top of the heap that are kept before it is trimmed.

    Returns
    -------
    applied : bool
        True where the settings took effect (Linux with glibc); False elsewhere, where
        the call changes nothing.

    Raises
    ------
    ValueError
        If a threshold is not a positive integer, or ``mmap_threshold`` exceeds 32 MiB.
    """
    for name, value in (("mmap_threshold", mmap_threshold),
                        ("trim_threshold", trim_threshold)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            raise ValueError(f"{name} must be a positive integer (bytes); got {value!r}.")
    mmap_threshold, trim_threshold = int(mmap_threshold), int(trim_threshold)
    if mmap_threshold > MAX_MMAP_THRESHOLD:
        raise ValueError(f"mmap_threshold={mmap_threshold} exceeds glibc's limit of "
                         f"{MAX_MMAP_THRESHOLD} bytes (32 MiB); pass a smaller value.")
    if not sys.platform.startswith("linux"):
        logger.debug("tune_allocator: not Linux, nothing changed")
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.debug("tune_allocator: no glibc mallopt, nothing changed")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt takes an int: larger trim thresholds are capped for it (2 GiB - 1 is
    # already "never trim" for this purpose), the environment gets the full value
    ok = (mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
          and mallopt(_M_TRIM_THRESHOLD, min(trim_threshold, 2**31 - 1)) == 1)
    if not ok:
        logger.debug("tune_allocator: mallopt refused the settings")
        return False
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    os.environ["MALLOC_TRIM_THRESHOLD_"] = str(trim_threshold)
    logger.debug("tune_allocator: mmap threshold %d, trim threshold %d bytes",
                 mmap_threshold, trim_threshold)
    return True
