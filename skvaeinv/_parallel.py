"""Starts in chunks: seeding, chunking, running chunks in joblib workers, relaying logs.

Shared by the estimators that advance many starts (or chains) as batches: each start
gets its own :class:`numpy.random.SeedSequence` child, the starts are split into chunks,
and the chunks run in this process or in joblib workers with one torch thread each (so
results do not depend on ``n_jobs``). Worker processes collect the package's log
records and send them back with their results.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import numbers
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.base import clone
from threadpoolctl import threadpool_limits

__all__ = ["seed_sequence", "start_generators", "split_starts", "operator_with_spare_cores",
           "run_chunks", "chunk_context"]

logger = logging.getLogger(__name__)

#: Starts per batch on the CPU when ``chunk_size`` is None.
CPU_CHUNK = 25


def seed_sequence(random_state: Any) -> np.random.SeedSequence:
    """A SeedSequence from a ``random_state`` parameter (None → fresh entropy).

    Parameters
    ----------
    random_state : None, int or numpy RandomState
        The estimator's parameter.

    Returns
    -------
    numpy.random.SeedSequence
        The root of the run's random streams.
    """
    if random_state is None:
        return np.random.SeedSequence()
    if isinstance(random_state, numbers.Integral):
        return np.random.SeedSequence(int(random_state))
    if isinstance(random_state, np.random.RandomState):
        return np.random.SeedSequence(int(random_state.randint(0, 2**31 - 1)))
    raise ValueError(f"random_state={random_state!r} must be None, an int or a "
                     "numpy RandomState.")


def start_generators(random_state: Any, n_starts: int) -> list[np.random.Generator]:
    """One generator per start, each from its own SeedSequence child.

    Parameters
    ----------
    random_state : None, int or numpy RandomState
        The estimator's parameter.
    n_starts : int
        Number of starts (or chains).

    Returns
    -------
    list of numpy.random.Generator
        Start ``i``'s stream does not depend on how the starts are chunked.
    """
    return [np.random.default_rng(c) for c in seed_sequence(random_state).spawn(n_starts)]


def split_starts(n_starts: int, chunk_size: int | None, device: torch.device
                 ) -> list[np.ndarray]:
    """Indices of the starts of each chunk, of (nearly) equal sizes.

    Parameters
    ----------
    n_starts : int
        Number of starts.
    chunk_size : int or None
        Most starts per chunk; None means :data:`CPU_CHUNK` on the CPU, all starts on
        an accelerator.
    device : torch.device
        The run's device.

    Returns
    -------
    list of ndarray of int
        ``ceil(n_starts / chunk_size)`` consecutive index ranges.
    """
    if chunk_size is None:
        chunk_size = CPU_CHUNK if device.type == "cpu" else n_starts
    return np.array_split(np.arange(n_starts), -(-n_starts // chunk_size))


def operator_with_spare_cores(operator: Any, spare: int) -> Any:
    """``operator``, or a clone of it that runs on ``spare`` cores.

    When the chunks run in this process (one chunk, or an accelerator) the cores that
    ``n_jobs`` grants them are idle during the CPU physics of a nonlinear operator: an
    operator with an ``n_jobs`` parameter left at None (e.g.
    :class:`~skvaeinv.forward.ShortestPath`, whose results do not depend on it) then
    gets them. Linear operators run as torch kernels and are returned as they are, as is
    an operator whose ``n_jobs`` the user set.

    Parameters
    ----------
    operator : ForwardOperator
        The forward operator.
    spare : int
        Cores available to it.

    Returns
    -------
    ForwardOperator
        ``operator`` itself or a clone with ``n_jobs=spare``.
    """
    spare = min(int(spare), os.cpu_count() or 1)
    if spare <= 1 or getattr(operator, "is_linear", False):
        return operator
    try:
        params = operator.get_params(deep=False)
        if "n_jobs" not in params or params["n_jobs"] is not None:
            return operator
        return clone(operator).set_params(n_jobs=spare)
    except (AttributeError, TypeError, RuntimeError, ValueError):
        # an operator outside the sklearn protocol, or one clone cannot copy: run it
        # as given
        return operator


def run_chunks(work: Callable[..., Any], chunk_args: Sequence[tuple], *, n_jobs: int,
               in_process: bool, stop: Callable[[Any], bool] = lambda result: False,
               label: str = "the run") -> tuple[list[Any], bool]:
    """Run ``work(*args, caller)`` for every chunk, here or in joblib workers.

    Parameters
    ----------
    work : callable
        ``work(*args, caller) -> (result, log records)``; ``caller`` is None in this
        process, else ``(process id, log level)`` for :func:`chunk_context`.
    chunk_args : sequence of tuple
        The arguments of each chunk.
    n_jobs : int
        Workers (resolved, >= 1).
    in_process : bool
        Run the chunks one after another in this process.
    stop : callable, default=never
        ``stop(result)``: in this process, skip the remaining chunks (e.g. after an
        interrupted chunk).
    label : str, default="the run"
        What the log line of an interrupt names.

    Returns
    -------
    results : list
        The results of the chunks that finished, in order.
    interrupted : bool
        Whether a KeyboardInterrupt stopped the run after at least one chunk.
    """
    results: list[Any] = []
    try:
        if in_process:
            for args in chunk_args:
                results.append(work(*args, None)[0])
                if stop(results[-1]):
                    break
        else:
            _run_in_workers(work, chunk_args, n_jobs, results)
    except KeyboardInterrupt:
        if not results:
            raise
        logger.warning("%s interrupted; keeping the %d finished chunk(s).", label,
                       len(results))
        return results, True
    return results, False


def _run_in_workers(work: Callable[..., Any], chunk_args: Sequence[tuple], n_jobs: int,
                    results: list[Any]) -> None:
    caller = (os.getpid(), _package_log_level())
    parallel = Parallel(n_jobs=min(n_jobs, len(chunk_args)), return_as="generator")
    try:
        for result, records in parallel(delayed(work)(*args, caller) for args in chunk_args):
            _relay(records)
            results.append(result)
    except Exception as exc:
        _relay(getattr(exc, "_skvaeinv_log_records", []))
        raise


@contextlib.contextmanager
def chunk_context(device: torch.device, caller: tuple[int, int] | None
                  ) -> Iterator[list[logging.LogRecord]]:
    """The surroundings of one chunk: one torch thread on the CPU, and log collection.

    In another process than ``caller``'s (a loky worker, which has none of the
    caller's log handlers) the package's log records are collected at the caller's
    level and yielded as a list, for :func:`run_chunks` to hand to the caller's
    handlers; in the caller's own process (also from threads) they go to the handlers
    directly and the list stays empty. An exception leaving the block carries the
    records collected so far.

    Parameters
    ----------
    device : torch.device
        The chunk's device.
    caller : tuple (process id, log level) or None
        The process that runs the estimator.

    Yields
    ------
    list of logging.LogRecord
        The collected records.
    """
    threads = _one_thread() if device.type == "cpu" else contextlib.nullcontext()
    collect = (_collect_logs(caller[1]) if caller is not None and os.getpid() != caller[0]
               else contextlib.nullcontext([]))
    with threads, collect as records:
        try:
            yield records
        except Exception as exc:   # the records so far travel with the error
            if records:
                exc._skvaeinv_log_records = list(records)
            raise


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch / BLAS thread while a chunk runs (restored afterwards)."""
    previous = torch.get_num_threads()
    try:
        with threadpool_limits(limits=1):
            torch.set_num_threads(1)
            yield
    finally:
        torch.set_num_threads(previous)


class _ListHandler(logging.Handler):
    """Keeps the records it is given, made picklable (message formatted, no traceback)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record = copy.copy(record)
            record.msg, record.args = record.getMessage(), None
            record.exc_info = record.exc_text = record.stack_info = None
            self.records.append(record)
        except Exception:  # a malformed log call: reported, as logging does, not raised
            self.handleError(record)


def _package_log_level() -> int:
    """The lowest level any of this process's ``skvaeinv`` loggers lets through."""
    names = [n for n in logging.Logger.manager.loggerDict
             if n == "skvaeinv" or n.startswith("skvaeinv.")]
    return min([logging.getLogger(n).getEffectiveLevel() for n in names]
               or [logging.getLogger("skvaeinv").getEffectiveLevel()])


@contextlib.contextmanager
def _collect_logs(level: int) -> Iterator[list[logging.LogRecord]]:
    """Collect the package's log records at ``level`` and above, instead of emitting them.

    For worker processes only: it changes the process-wide ``skvaeinv`` logger while it
    runs (and restores it after).
    """
    package = logging.getLogger("skvaeinv")
    handler = _ListHandler()
    saved_level, saved_propagate = package.level, package.propagate
    package.addHandler(handler)
    package.setLevel(level)
    package.propagate = False
    try:
        yield handler.records
    finally:
        package.removeHandler(handler)
        package.setLevel(saved_level)
        package.propagate = saved_propagate


def _relay(records: list[logging.LogRecord]) -> None:
    """Hand log records collected in a worker to this process's handlers, each at the
    level its logger has here."""
    for record in records:
        logger_ = logging.getLogger(record.name)
        if logger_.isEnabledFor(record.levelno):
            logger_.handle(record)
