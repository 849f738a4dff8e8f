"""The per-start, per-iteration record of a multi-start latent run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["SGDHistory", "HistoryRecorder"]


class SGDHistory:
    """Per-start, per-iteration record of a multi-start latent SGD run.

    Parameters
    ----------
    data_rmse : ndarray of shape (n_starts, n_iter)
        Full-data (weighted) RMSE of the iterate before the update of each iteration;
        NaN where it was not evaluated (nonlinear forward between tracking points) or
        after a start diverged.
    batch_rmse : ndarray of shape (n_starts, n_iter)
        (Weighted) RMSE over the iteration's mini-batch.
    z_norm : ndarray of shape (n_starts, n_iter)
        ``||z||`` of the iterate before the update.
    cost : ndarray of shape (n_starts, n_iter)
        Total cost (full-data weighted sum of squares + ``λ_k R(z)``), NaN where not
        evaluated.
    lr : ndarray of shape (n_iter,)
        Learning rate of each iteration (the same for every start).
    reg_weight : ndarray of shape (n_iter,)
        Regularisation weight ``λ_k`` of each iteration (the same for every start).
    epoch : ndarray of shape (n_iter,)
        Epoch (0-based) of each iteration.

    Examples
    --------
    >>> import numpy as np
    >>> h = SGDHistory(data_rmse=np.ones((2, 3)), batch_rmse=np.ones((2, 3)),
    ...                z_norm=np.ones((2, 3)), cost=np.ones((2, 3)),
    ...                lr=np.full(3, 0.01), reg_weight=np.ones(3), epoch=np.zeros(3, int))
    >>> h.n_starts, h.n_iter, h["data_rmse"].shape, h[1, "lr"].shape
    (2, 3, (2, 3), (3,))
    """

    per_start_fields = ("data_rmse", "batch_rmse", "z_norm", "cost")
    per_iteration_fields = ("lr", "reg_weight", "epoch")

    def __init__(self, *, data_rmse: np.ndarray, batch_rmse: np.ndarray, z_norm: np.ndarray,
                 cost: np.ndarray, lr: np.ndarray, reg_weight: np.ndarray,
                 epoch: np.ndarray) -> None:
        self.data_rmse = np.asarray(data_rmse)
        self.batch_rmse = np.asarray(batch_rmse)
        self.z_norm = np.asarray(z_norm)
        self.cost = np.asarray(cost)
        self.lr = np.asarray(lr)
        self.reg_weight = np.asarray(reg_weight)
        self.epoch = np.asarray(epoch)

    @classmethod
    def empty(cls, n_starts: int) -> "SGDHistory":
        """The history of ``n_starts`` starts that never ran (no iterations).

        Parameters
        ----------
        n_starts : int
            Number of starts.

        Returns
        -------
        SGDHistory
            Records with zero iterations.
        """
        return cls(**{f: np.full((n_starts, 0), np.nan) for f in cls.per_start_fields},
                   lr=np.zeros(0), reg_weight=np.zeros(0), epoch=np.zeros(0, dtype=np.int64))

    @property
    def n_starts(self) -> int:
        """Number of starts recorded."""
        return int(self.data_rmse.shape[0])

    @property
    def n_iter(self) -> int:
        """Number of iterations recorded."""
        return int(self.data_rmse.shape[1])

    def keys(self) -> tuple[str, ...]:
        """Names of the recorded quantities.

        Returns
        -------
        tuple of str
            The per-start fields (``"data_rmse"``, ``"batch_rmse"``, ``"z_norm"``,
            ``"cost"``) followed by the per-iteration fields (``"lr"``,
            ``"reg_weight"``, ``"epoch"``).
        """
        return self.per_start_fields + self.per_iteration_fields

    def __len__(self) -> int:
        return self.n_iter

    def __getitem__(self, key: Any) -> Any:
        """Look up records by name, start or both.

        Parameters
        ----------
        key : str, int or tuple (int, str)
            A record name, a start index, or both.

        Returns
        -------
        ndarray or dict
            ``h["data_rmse"]`` → (n_starts, n_iter); ``h["lr"]`` → (n_iter,);
            ``h[i, "z_norm"]`` → (n_iter,) of start ``i``; ``h[i]`` → dict of start ``i``.
        """
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{key!r} is not recorded; available: {self.keys()}")
            return getattr(self, key)
        if isinstance(key, tuple) and len(key) == 2:
            start, name = key
            values = self[name]
            return values if name in self.per_iteration_fields else values[start]
        if isinstance(key, (int, np.integer)):
            return self.start(int(key))
        raise KeyError(f"unsupported history key {key!r}")

    def start(self, index: int) -> dict[str, np.ndarray]:
        """All records of one start, each of shape (n_iter,).

        Parameters
        ----------
        index : int
            Index of the start, in ``[-n_starts, n_starts)`` (negative values count from
            the end).

        Returns
        -------
        dict of str to ndarray of shape (n_iter,)
            Every recorded quantity (see :meth:`keys`): the per-start ones for start
            ``index``, and the per-iteration ones, which all starts share.

        Raises
        ------
        IndexError
            If ``index`` is out of range.
        """
        if not -self.n_starts <= index < self.n_starts:
            raise IndexError(f"start index {index} out of range for {self.n_starts} starts")
        out = {name: getattr(self, name)[index] for name in self.per_start_fields}
        out.update({name: getattr(self, name) for name in self.per_iteration_fields})
        return out

    def to_dict(self) -> dict[str, np.ndarray]:
        """All records as a dict of arrays.

        Returns
        -------
        dict of str to ndarray
            One entry per name of :meth:`keys`: arrays of shape (n_starts, n_iter) for
            the per-start quantities and (n_iter,) for the per-iteration ones. The
            arrays are not copied.
        """
        return {name: getattr(self, name) for name in self.keys()}

    @classmethod
    def concatenate(cls, histories: Sequence["SGDHistory"]) -> "SGDHistory":
        """Stack the histories of chunks of starts (shorter ones padded with NaN).

        Parameters
        ----------
        histories : sequence of SGDHistory
            Histories of chunks of starts, stacked in the given order; they may have run
            for different numbers of iterations.

        Returns
        -------
        SGDHistory
            The histories of all starts, with ``n_iter`` the largest of the chunks'. The
            per-start quantities of shorter histories are padded with NaN; the
            per-iteration ones (``lr``, ``reg_weight``, ``epoch``) are those of the
            longest history.
        """
        n_iter = max(h.n_iter for h in histories)
        longest = max(histories, key=lambda h: h.n_iter)
        stacked = {name: np.concatenate([_pad(getattr(h, name), n_iter) for h in histories])
                   for name in cls.per_start_fields}
        stacked.update({name: getattr(longest, name) for name in cls.per_iteration_fields})
        return cls(**stacked)

    def __repr__(self) -> str:
        return f"SGDHistory(n_starts={self.n_starts}, n_iter={self.n_iter})"


def _pad(a: np.ndarray, n_iter: int) -> np.ndarray:
    """``a`` of shape (n, k) padded with NaN columns to (n, n_iter)."""
    if a.shape[1] == n_iter:
        return a
    out = np.full((a.shape[0], n_iter), np.nan, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


class HistoryRecorder:
    """Fills the records of a run on its device, one iteration at a time.

    Parameters
    ----------
    n_iter : int
        Iterations planned.
    n_starts : int
        Number of starts.
    device : torch.device
        Where the per-start records accumulate.
    """

    def __init__(self, n_iter: int, n_starts: int, device: torch.device) -> None:
        self._per_start = {name: torch.full((n_iter, n_starts), math.nan,
                                            dtype=torch.float32, device=device)
                           for name in SGDHistory.per_start_fields}
        self._lr = np.full(n_iter, np.nan)
        self._reg = np.full(n_iter, np.nan)
        self._epoch = np.full(n_iter, -1, dtype=np.int64)
        self._nan = torch.tensor(math.nan, dtype=torch.float32, device=device)

    def record(self, iteration: int, active: torch.Tensor, **values: torch.Tensor) -> None:
        """Record per-start values of ``iteration``, NaN for the stopped starts.

        Parameters
        ----------
        iteration : int
            The iteration.
        active : torch.Tensor of shape (n_starts,)
            The starts still running.
        **values : torch.Tensor of shape (n_starts,)
            Values by field name (``data_rmse``, ``batch_rmse``, ``z_norm``, ``cost``).
        """
        for name, value in values.items():
            self._per_start[name][iteration] = torch.where(active, value, self._nan)

    def record_schedule(self, iteration: int, lr: float, reg_weight: float,
                        epoch: int) -> None:
        """Record the schedule values of ``iteration``.

        Parameters
        ----------
        iteration : int
            The iteration.
        lr, reg_weight : float
            Its learning rate and regularisation weight.
        epoch : int
            Its epoch.
        """
        self._lr[iteration] = lr
        self._reg[iteration] = reg_weight
        self._epoch[iteration] = epoch

    def history(self, n_done: int) -> SGDHistory:
        """The records of the first ``n_done`` iterations.

        Parameters
        ----------
        n_done : int
            Iterations completed.

        Returns
        -------
        SGDHistory
            The records, as numpy arrays of shape (n_starts, n_done) and (n_done,).
        """
        h = slice(0, n_done)
        per_start = {name: v[h].T.cpu().numpy() for name, v in self._per_start.items()}
        return SGDHistory(**per_start, lr=self._lr[h], reg_weight=self._reg[h],
                          epoch=self._epoch[h])
