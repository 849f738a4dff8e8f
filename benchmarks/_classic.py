"""Classic smoothness-constrained traveltime inversion with pyGIMLi (benchmark helper).

Not part of the package: :func:`classic_inversion` runs pyGIMLi's own
``TravelTimeManager`` (Dijkstra / shortest-path forward operator, Gauss-Newton with
first-order smoothness on the log of the slowness) on the study's regular grid, set
up as a careful borehole-radar user would, so that ``benchmarks/classic_vs_prior.py``
can compare it cell by cell with the latent (VAE-prior) inversion.

Units throughout are nanoseconds and metres: traveltimes and errors in ns, slowness
in ns/m, velocity in m/ns.
"""

from __future__ import annotations

import time

import numpy as np

#: Physical bounds on radar velocity (m/ns): water ~0.033, air/vacuum ~0.3.
VELOCITY_LIMITS = (0.03, 0.3)
#: Automatic lambda: start value and cooling factor per Gauss-Newton iteration.
LAM_START = 300.0
LAM_FACTOR = 0.5
#: pyGIMLi's line search (default on; each use costs extra forward runs).
LINE_SEARCH = True
#: Take each forward response as J(m) m from the shortest paths of one Dijkstra pass
#: (identical to pyGIMLi's response to ~1e-13 ns; see :func:`_path_sharing_operator`).
SHARE_PATHS = True


def _import_pygimli():
    try:
        import pygimli as pg
        from pygimli.physics import traveltime as tt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the classic inversion needs pyGIMLi: pip install pygimli "
                          "(or conda install -c gimli pygimli)") from exc
    return pg, tt


def _pygimli_version(pg) -> str:
    """The installed distribution's version (``pg.__version__`` can be a git tag)."""
    try:
        from importlib.metadata import version
        return version("pygimli")
    except Exception:  # noqa: BLE001 - metadata missing in odd installs
        return str(pg.__version__)


def _path_sharing_operator(tt):
    """pyGIMLi's Dijkstra operator with one shortest-path pass per model.

    pyGIMLi's ``TravelTimeDijkstraModelling`` runs the full Dijkstra search twice for
    the same model, once in ``response`` and again in ``createJacobian`` (each ~10 s
    here). For shortest paths the traveltime is exactly the sum of path length times
    cell slowness, i.e. ``response(m) == J(m) @ m``. This subclass computes the
    Jacobian (the paths) once, returns ``J @ m`` as the response and reuses that
    Jacobian when the inversion asks for it at the same model, which is what
    ``RInversion`` does at the start of every iteration (its line search never uses
    the Jacobian, only responses). Numbers are unchanged; forward runs drop by ~half.
    """
    base = tt.TravelTimeDijkstraModelling

    class PathSharingDijkstraModelling(base):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._jacobian_model = None

        def setMeshPost(self, mesh):
            self._jacobian_model = None
            super().setMeshPost(mesh)

        def setDataPost(self, data):
            self._jacobian_model = None
            super().setDataPost(data)

        def createJacobian(self, par):
            model = np.array(par, dtype=float)
            if self._jacobian_model is None or not np.array_equal(model, self._jacobian_model):
                super().createJacobian(par)
                self._jacobian_model = model

        def response(self, par):
            self.createJacobian(par)
            return self.jacobian().mult(par)

    class Manager(tt.TravelTimeManager):
        def createForwardOperator(self, **kwargs):
            return PathSharingDijkstraModelling(verbose=self.verbose)

    return Manager


def classic_inversion(sensors, source, receiver, traveltimes_ns, sigma_ns, *,
                      x_extent: tuple[float, float] = (0.0, 6.5),
                      z_extent: tuple[float, float] = (0.0, 12.9),
                      cell: float = 0.1, sec_nodes: int = 2,
                      lam: float | None = None, max_iter: int = 16,
                      verbose: bool = False) -> dict:
    """Smoothness-constrained pyGIMLi traveltime inversion on the study's grid.

    pyGIMLi's defaults target refraction seismics (a 500-5000 m/s gradient starting
    model, no bounds); on crosshole radar data in ns they fail badly. Non-default
    settings used here (all recorded in ``result["settings"]``):

    * units ns and m (slowness ns/m); data errors are the absolute ``sigma_ns``
      (pyGIMLi turns them into relative errors ``sigma / t``);
    * ``useGradient=False`` and a homogeneous starting slowness equal to the median
      of time/distance over all picks (the data's apparent slowness);
    * velocity bounds ``VELOCITY_LIMITS`` = 0.03-0.3 m/ns, i.e. slowness
      3.33-33.3 ns/m, imposed by pyGIMLi's log-barrier model transform. They are
      set on the region manager directly, because ``TravelTimeManager.invert(limits=)``
      assumes m/s and would swap/invert bounds given in ns/m or m/ns;
    * the inversion mesh is a regular ``pg.createGrid`` of ``cell``-sized cells
      covering ``x_extent`` x ``z_extent`` (y = -z), with ``sec_nodes`` secondary
      nodes per cell edge for the Dijkstra forward operator;
    * regularisation strength ``lam`` (below). Smoothness type (first order,
      ``cType=1``, ``zWeight=1``), the identity data transform, the log model
      transform, the line search and the 1 % dPhi stop are pyGIMLi's defaults;
    * forward responses are taken as ``J(m) @ m`` from the Jacobian's shortest
      paths (:func:`_path_sharing_operator`): same numbers as pyGIMLi's own
      response (to ~1e-13 ns), one Dijkstra pass per model instead of two.

    How ``lam`` is chosen (``lam=None``): discrepancy principle through pyGIMLi's
    own chi² = 1 handling, with lambda cooling. The run starts strongly regularised
    (``lam = LAM_START`` = 300) and multiplies lam by ``lambdaFactor = LAM_FACTOR``
    (0.5) after every Gauss-Newton iteration; pyGIMLi's ``stopAtChi1`` ends the run
    at the first iterate with chi² <= 1, i.e. the most regularised model along the
    cooling path that fits the data to their errors; otherwise it ends after
    ``max_iter`` iterations (or pyGIMLi's < 1 % dPhi stop). Faster cooling (0.3) or
    a smaller start (100) was tried and reached a worse chi² in the same number of
    iterations (full Gauss-Newton steps at small lam overshoot and the line search
    then needs extra forward runs). A float ``lam`` gives a fixed-lambda run
    (``lambdaFactor=1``, same stops).

    Cost and measured behaviour: one Dijkstra pass takes ~10 s (``sec_nodes=2``,
    65 x 129 cells, 625 picks, one core of an Intel Xeon, 2-core machine) and an
    iteration needs 1-3 of them (the parabolic line search kicks in at small lam).
    On the study's data with sigma 0.25 ns, the default ``max_iter=16`` takes
    ~7-8 min: ``mc2_sec2 + 0.25 * noise`` ends at chi² 1.00 (16 iterations, 422 s),
    ``<truth>_sec3 + 0.25 * noise`` at chi² 0.99 / 1.25 / 1.31 for mc2 / mc1 / mc3
    (419-465 s); after 8 iterations (~3 min) chi² is 1.4-3.1 while the model error
    is already within ~0.01 of the final one. Pass ``max_iter=8`` for a ~3-minute
    run. With ``sec_nodes=2`` on data made with 3 secondary nodes the modelling error
    (~0.2 ns RMS after a 0.3 % scale) is comparable to the noise. Sensors off the
    grid's nodes are snapped by pyGIMLi to the nearest (secondary) node: on a survey
    with sensors between nodes this alone gave 0.33 ns RMS (max 1.0 ns) against
    exact shortest-path times, so chi² = 1 is then out of reach without fitting it.

    Parameters
    ----------
    sensors : array_like, shape (n_sensors, 2)
        Sensor positions ``(x, z)`` in metres, z positive downward.
    source, receiver : array_like of int, shape (n_data,)
        0-based sensor indices of each pick.
    traveltimes_ns : array_like, shape (n_data,)
        First-arrival times (ns).
    sigma_ns : float or array_like, shape (n_data,)
        Standard deviation of each pick (ns).
    x_extent, z_extent : tuple of float
        Model domain (m); z positive downward.
    cell : float
        Cell size (m) of the regular inversion grid.
    sec_nodes : int
        Secondary nodes per cell edge for pyGIMLi's Dijkstra forward operator.
    lam : float, optional
        Fixed regularisation strength; ``None`` (default) for the cooling /
        chi² = 1 schedule described above.
    max_iter : int
        Most Gauss-Newton iterations (pyGIMLi's ``maxIter``).
    verbose : bool
        Let pyGIMLi print its iteration log.

    Returns
    -------
    dict
        ``velocity`` (nz, nx) m/ns and ``slowness`` (nz, nx) ns/m, row 0 at the top
        (z down), row-major; ``chi2`` (pyGIMLi's final chi² per datum); ``rms_ns``
        (RMS of data minus pyGIMLi's response of the final model, ns); ``lam`` (the
        value of the final iteration); ``lam_start``; ``iterations``;
        ``chi2_history``; ``wall_s``; ``settings`` (every non-default option).

    Raises
    ------
    ImportError
        If pyGIMLi is not installed (``pip install pygimli``).
    """
    pg, tt = _import_pygimli()
    t0 = time.perf_counter()

    sensors = np.asarray(sensors, dtype=float)
    source = np.asarray(source, dtype=int).ravel()
    receiver = np.asarray(receiver, dtype=int).ravel()
    t = np.asarray(traveltimes_ns, dtype=float).ravel()
    sigma = np.broadcast_to(np.asarray(sigma_ns, dtype=float), t.shape).copy()
    if sensors.ndim != 2 or sensors.shape[1] != 2:
        raise ValueError(f"sensors must be (n_sensors, 2), got {sensors.shape}")
    if not (len(source) == len(receiver) == len(t)):
        raise ValueError("source, receiver and traveltimes_ns must have the same length")
    if len(t) == 0 or np.any(t <= 0) or np.any(sigma <= 0):
        raise ValueError("traveltimes and sigma must be positive")
    if min(source.min(), receiver.min()) < 0 or max(source.max(), receiver.max()) >= len(sensors):
        raise ValueError("source/receiver index out of range")

    # Data container: pyGIMLi 2-D uses (x, y) with y up, so y = -z.
    data = pg.DataContainer()
    data.registerSensorIndex("s")
    data.registerSensorIndex("g")
    for x, z in sensors:
        data.createSensor([float(x), -float(z)])
    data.resize(len(t))
    data.set("s", source.astype(float))
    data.set("g", receiver.astype(float))
    data.set("t", t)
    data.set("err", sigma)  # absolute (ns); TravelTimeManager divides by t

    # Regular grid covering the study domain.
    nx = round((x_extent[1] - x_extent[0]) / cell)
    nz = round((z_extent[1] - z_extent[0]) / cell)
    xs = x_extent[0] + cell * np.arange(nx + 1)
    ys = -z_extent[1] + cell * np.arange(nz + 1)
    mesh = pg.createGrid(x=xs, y=ys)

    dist = np.hypot(*(sensors[receiver] - sensors[source]).T)
    s_start = float(np.median(t / dist))
    s_limits = [1.0 / VELOCITY_LIMITS[1], 1.0 / VELOCITY_LIMITS[0]]

    manager = _path_sharing_operator(tt) if SHARE_PATHS else tt.TravelTimeManager
    mgr = manager(secNodes=sec_nodes, verbose=verbose)
    mgr.setMesh(mesh)  # before invert(), so that region properties stick
    mgr.fop.setRegionProperties("*", limits=s_limits)

    auto = lam is None
    lam0 = LAM_START if auto else float(lam)
    factor = LAM_FACTOR if auto else 1.0
    mgr.fw.inv.setLineSearch(LINE_SEARCH)
    mgr.invert(data, useGradient=False, startModel=s_start, lam=lam0, lambdaFactor=factor,
               maxIter=int(max_iter), stopAtChi1=True, verbose=verbose)

    inv = mgr.fw
    slow_cells = np.asarray(mgr.fop.paraModel(inv.inv.model()), dtype=float)
    response = np.asarray(inv.inv.response(), dtype=float)
    chi2 = float(inv.inv.chi2())
    history = [float(c) for c in inv.chi2History]
    iterations = len(history) - 1

    centers = np.array([[c.center().x(), c.center().y()] for c in mgr.paraDomain.cells()])
    ix = np.floor((centers[:, 0] - x_extent[0]) / cell).astype(int)
    iz = np.floor((-centers[:, 1] - z_extent[0]) / cell).astype(int)
    slowness = np.full((nz, nx), np.nan)
    slowness[iz, ix] = slow_cells
    if np.isnan(slowness).any():
        raise RuntimeError("pyGIMLi's parameter mesh does not cover the grid")

    return {
        "velocity": 1.0 / slowness,
        "slowness": slowness,
        "chi2": chi2,
        "rms_ns": float(np.sqrt(np.mean((response - t) ** 2))),
        "lam": lam0 * factor ** max(iterations - 1, 0),  # lambda of the last step
        "lam_start": lam0,
        "iterations": iterations,
        "chi2_history": history,
        "wall_s": time.perf_counter() - t0,
        "settings": {
            "pygimli_version": _pygimli_version(pg),
            "units": "ns, m (slowness ns/m, velocity m/ns)",
            "manager": "pygimli.physics.traveltime.TravelTimeManager (Dijkstra)",
            "mesh": f"pg.createGrid regular {nx} x {nz} cells of {cell} m, y = -z",
            "secNodes": sec_nodes,
            "useGradient": False,
            "startModel_slowness_ns_per_m": s_start,
            "startModel_rule": "median(t / distance) over all picks",
            "velocity_limits_m_per_ns": list(VELOCITY_LIMITS),
            "slowness_limits_ns_per_m": s_limits,
            "limits_set_via": "fop.setRegionProperties('*', limits=...) (log-barrier)",
            "error": "absolute sigma_ns in data['err'] (relative sigma/t inside)",
            "lam": lam0,
            "lambdaFactor": factor,
            "lam_rule": ("cooling from LAM_START by LAM_FACTOR, stop at chi2 <= 1"
                         if auto else "fixed"),
            "stopAtChi1": True,
            "maxIter": int(max_iter),
            "lineSearch": LINE_SEARCH,
            "response_from_jacobian": SHARE_PATHS,
        },
    }
