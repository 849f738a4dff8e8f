"""Multi-start runs on a Dask cluster through joblib give the same models as locally."""

import numpy as np

from skvaeinv import LatentInverter
from skvaeinv.forward import StraightRay
from skvaeinv.petrophysics import LinearVelocity
from skvaeinv.survey import Grid2D, crosshole

from conftest import TINY_SHAPE


def test_dask_localcluster_matches_local_run(tiny_prior):
    import distributed  # in the [test] extra
    import joblib

    grid = Grid2D(TINY_SHAPE, spacing=0.1)
    rays = crosshole(grid, depths=np.arange(0.15, 3.2, 0.3))
    truth = tiny_prior.sample(1, random_state=5)[0]
    y = StraightRay(grid).traveltimes(LinearVelocity()(truth), rays)
    params = dict(n_starts=4, chunk_size=2, epochs=3, batch_size=20, lr=0.05,
                  device="cpu", random_state=0)
    local = LatentInverter(tiny_prior, StraightRay(grid), n_jobs=1, **params).fit(rays, y)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with joblib.parallel_config(backend="dask"), \
                distributed.get_task_stream(client) as stream:
            remote = LatentInverter(tiny_prior, StraightRay(grid), n_jobs=2,
                                    **params).fit(rays, y)
        # the chunks really ran as tasks on the cluster's worker processes
        workers = {t["worker"] for t in stream.data}
        assert len(stream.data) >= 2 and workers <= set(client.scheduler_info()["workers"])
    np.testing.assert_array_equal(remote.models_, local.models_)
    np.testing.assert_array_equal(remote.latents_, local.latents_)
    np.testing.assert_array_equal(remote.data_rmse_, local.data_rmse_)
