"""Mini-batches of rays: each epoch visits every ray once, in an order drawn per start."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["group_labels", "epoch_orders"]


def group_labels(batch_groups: np.ndarray | None, n_rays: int) -> np.ndarray | None:
    """Dense labels ``0..n_groups-1`` of the rays' groups (None stays None).

    Parameters
    ----------
    batch_groups : array-like of shape (n_rays,) or None
        A group label per ray (e.g. its source), of any sortable type.
    n_rays : int
        Number of rays.

    Returns
    -------
    ndarray of shape (n_rays,) or None
        The labels renumbered from 0.

    Raises
    ------
    ValueError
        If there is not one label per ray.
    """
    if batch_groups is None:
        return None
    labels = np.unique(np.asarray(batch_groups).reshape(-1), return_inverse=True)[1]
    if labels.size != n_rays:
        raise ValueError(f"batch_groups has {labels.size} labels for {n_rays} rays.")
    return labels.reshape(-1)


def epoch_orders(rngs: Sequence[np.random.Generator], n_rays: int,
                 groups: np.ndarray | None) -> np.ndarray:
    """One epoch's ray order for every start, each drawn by that start's generator.

    Without groups, a uniformly random permutation. With groups, the groups in a random
    order and the rays of a group consecutively, in random order, so that a
    mini-batch holds rays of one or two groups.

    Parameters
    ----------
    rngs : sequence of numpy Generators
        One per start.
    n_rays : int
        Number of rays.
    groups : ndarray of shape (n_rays,) or None
        Dense group labels (:func:`group_labels`).

    Returns
    -------
    ndarray of shape (n_starts, n_rays)
        The orders; row ``b`` is start ``b``'s.
    """
    return np.stack([_order(rng, n_rays, groups) for rng in rngs])


def _order(rng: np.random.Generator, n_rays: int, groups: np.ndarray | None) -> np.ndarray:
    if groups is None:
        return rng.permutation(n_rays)
    rank = rng.permutation(int(groups.max()) + 1)[groups]
    return np.lexsort((rng.random(n_rays), rank))
