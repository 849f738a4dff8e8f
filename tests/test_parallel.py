"""Tests of skvaeinv._parallel through LatentInverter: chunks of starts in joblib
workers, the cores they leave to a nonlinear operator, and the log records they relay."""

import logging
import os

import numpy as np
import pytest
import torch

from skvaeinv import LatentInverter
from skvaeinv._parallel import operator_with_spare_cores
from skvaeinv.forward import ShortestPath, StraightRay
from skvaeinv.petrophysics import LinearVelocity

FAST = dict(epochs=3, batch_size=32, lr=0.05, reg_weight=5.0, reg_decay=0.99, device="cpu")


def test_idle_cores_go_to_the_shortest_path_operator(tiny_prior, bent_data, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)   # the spare cores are capped by it
    grid, rays, sp, y = bent_data
    given = operator_with_spare_cores(sp, 2)
    assert given is not sp and given.n_jobs == 2 and sp.n_jobs is None
    assert given.get_params() == {**sp.get_params(), "n_jobs": 2}
    class Uncloneable(ShortestPath):  # its constructor breaks sklearn's clone
        def __init__(self, grid, secondary_nodes=1, n_jobs=None):
            super().__init__(grid, secondary_nodes=secondary_nodes + 0, n_jobs=n_jobs)
            self.secondary_nodes = [secondary_nodes]

    for op, spare in ((sp, 1), (ShortestPath(grid, n_jobs=1), 2), (StraightRay(grid), 2),
                      (Uncloneable(grid), 2)):
        # nothing idle, the user's choice, a linear operator, one clone cannot copy
        assert operator_with_spare_cores(op, spare) is op
    # one chunk of starts with n_jobs=2: the operator runs over two worker processes,
    # with the same result as in this process
    kw = dict(n_starts=2, epochs=2, batch_size=4, lr=0.1, reg_weight=5.0, reg_decay=0.99,
              device="cpu", random_state=0)
    one = LatentInverter(tiny_prior, sp, n_jobs=1, **kw).fit(rays, y)
    two = LatentInverter(tiny_prior, sp, n_jobs=2, **kw).fit(rays, y)
    assert sp.n_jobs is None  # the user's operator is not modified
    np.testing.assert_array_equal(two.latents_, one.latents_)
    np.testing.assert_array_equal(two.history_.batch_rmse, one.history_.batch_rmse)


@pytest.mark.parametrize("backend", ["in-process", "loky", "threading"])
def test_verbose_logs_reach_this_process(tiny_prior, survey, data, caplog, backend):
    # chunks in worker processes send their progress records back to the caller; in
    # threads they log directly; either way each epoch line arrives once
    from joblib import parallel_config

    grid, rays = survey
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=4, chunk_size=2,
                         n_jobs=1 if backend == "in-process" else 2, verbose=2,
                         random_state=0, **FAST)
    package = logging.getLogger("skvaeinv")
    with caplog.at_level("INFO", logger="skvaeinv"), parallel_config(
            backend="loky" if backend == "in-process" else backend):
        before = package.level, package.propagate, list(package.handlers)
        inv.fit(rays, data[2])
        assert (package.level, package.propagate, package.handlers) == before
    lines = [r.getMessage() for r in caplog.records if r.name == "skvaeinv.engine"]
    for chunk in ("starts 0-1: ", "starts 2-3: "):
        epochs = [m for m in lines if m.startswith(chunk + "epoch ")]
        assert len(epochs) == FAST["epochs"], (chunk, lines)   # each epoch once


class _FailingVelocity(LinearVelocity):
    """The reference mapping, until its ``after``-th call in the inversion."""

    def __init__(self, after=12):
        super().__init__()
        self.after, self.calls = after, 0

    def __call__(self, m):
        if isinstance(m, torch.Tensor) and m.requires_grad:   # the inversion's calls
            self.calls += 1
            if self.calls > self.after:
                raise RuntimeError("physics code crashed")
        return super().__call__(m)


def test_a_failing_worker_still_sends_its_logs(tiny_prior, survey, data, caplog):
    grid, rays = survey   # 256 rays in batches of 32: 8 iterations an epoch
    inv = LatentInverter(tiny_prior, StraightRay(grid), petrophysics=_FailingVelocity(12),
                         n_starts=4, chunk_size=2, n_jobs=2, verbose=2, random_state=0,
                         **FAST)
    with caplog.at_level("INFO", logger="skvaeinv"), \
            pytest.raises(RuntimeError, match="physics code crashed"):
        inv.fit(rays, data[2])
    lines = [r.getMessage() for r in caplog.records if r.name == "skvaeinv.engine"]
    assert any(m.startswith("starts ") and "epoch 1/3" in m for m in lines), lines


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_relayed_logs_follow_this_process_levels(tiny_prior, survey, data, caplog, n_jobs):
    # a quieter engine logger here silences the workers' epoch lines too, and a louder
    # one lets them through although the package logger is quiet
    grid, rays = survey
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=4, chunk_size=2,
                         n_jobs=n_jobs, verbose=2, random_state=0, **FAST)
    engine_logger = logging.getLogger("skvaeinv.engine")
    for package_level, engine_level, expected in (("INFO", "WARNING", 0),
                                                  ("WARNING", "INFO", 2 * FAST["epochs"])):
        caplog.clear()
        with caplog.at_level(package_level, logger="skvaeinv"), \
                caplog.at_level(engine_level, logger="skvaeinv.engine"):
            inv.fit(rays, data[2])
        epochs = [r for r in caplog.records
                  if r.name == engine_logger.name and "epoch " in r.getMessage()]
        assert len(epochs) == expected, (package_level, engine_level, len(epochs))

