"""A torch autograd bridge for any :class:`~skvaeinv.forward.ForwardOperator`."""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .._device import resolve_device
from ._base import ForwardOperator

__all__ = ["TorchForward"]

logger = logging.getLogger(__name__)

#: With ``kernel="auto"``, linear kernels are kept dense when they have at most this many
#: entries *and* at least this fraction of them is non-zero; sparse (CSR) otherwise.
_DENSE_LIMIT = 50_000_000
_DENSE_FRACTION = 0.2


class _SparseKernelProduct(torch.autograd.Function):
    """``slowness @ K.T`` for a CSR kernel ``K``; the backward uses a CSR copy of ``K.T``.

    (Straight-ray kernels are ~1 % full: two CSR products cost ~1/10 of the dense ones.)
    """

    @staticmethod
    def forward(ctx: Any, slowness: torch.Tensor, K: torch.Tensor,
                KT: torch.Tensor) -> torch.Tensor:
        ctx.KT = KT
        return (K @ slowness.t()).t()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        return (ctx.KT @ grad_out.t()).t(), None, None


@contextlib.contextmanager
def _quiet_sparse() -> Iterator[None]:
    """Silence torch's notices about its sparse tensors (not about our input).

    torch flags its CSR support as "beta", and some builds (seen with 2.11 + CUDA) warn
    that invariant checks are "implicitly disabled" when a sparse tensor built with an
    explicit ``check_invariants`` is moved to a GPU.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support",
                                category=UserWarning)
        warnings.filterwarnings("ignore", message=".*[Ss]parse invariant checks are "
                                "implicitly disabled", category=UserWarning)
        yield


def _csr(J: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    J = J.tocsr()
    J.sort_indices()
    with _quiet_sparse():
        return torch.sparse_csr_tensor(
            torch.from_numpy(J.indptr.astype(np.int64)),
            torch.from_numpy(J.indices.astype(np.int64)), torch.from_numpy(J.data),
            size=J.shape, dtype=dtype, device=device, check_invariants=True)


def _host_rows(slowness: torch.Tensor, bridge: TorchForward, ray_index: np.ndarray,
               jacobian: bool) -> tuple[np.ndarray, list]:
    """Times ``(B, k)`` of a nonlinear operator on the CPU, and the Jacobian blocks."""
    B, k = ray_index.shape
    S = slowness.detach().to("cpu", torch.float64).numpy()
    bad = ~(np.isfinite(S) & (S > 0))
    if bad.any():
        starts, cells = np.nonzero(bad)
        raise ValueError(
            f"slowness must be finite and > 0 in every cell; start {starts[0]} has "
            f"{float(S[starts[0], cells[0]])!r} in cell {cells[0]} "
            f"({int(bad.sum())} bad value(s) in all).")
    times = np.empty((B, k))
    blocks = []
    for b in range(B):
        t_b, J_b = bridge._nonlinear_rows(S[b], ray_index[b], jacobian)
        times[b] = t_b
        blocks.append(J_b)
    return times, blocks


class _NonlinearTraveltimes(torch.autograd.Function):
    """Traveltimes of a nonlinear operator, computed on the CPU; backward ``J_b^T g_b``."""

    @staticmethod
    def forward(ctx: Any, slowness: torch.Tensor, bridge: TorchForward,
                ray_index: np.ndarray) -> torch.Tensor:
        times, blocks = _host_rows(slowness, bridge, ray_index, jacobian=True)
        # block-diagonal (B*k, B*N) Jacobian: one sparse product gives every J_b^T g_b
        J = sp.block_diag(blocks, format="coo")
        indices = torch.from_numpy(np.vstack([J.row, J.col]).astype(np.int64))
        values = torch.from_numpy(J.data)
        with _quiet_sparse():
            Jt = torch.sparse_coo_tensor(
                indices, values, size=J.shape, dtype=slowness.dtype,
                device=slowness.device, check_invariants=False,
            ).coalesce()
        ctx.save_for_backward(Jt)
        ctx.shape = slowness.shape
        return torch.from_numpy(times).to(device=slowness.device, dtype=slowness.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        (Jt,) = ctx.saved_tensors
        g = grad_out.reshape(-1, 1).to(Jt.dtype)
        grad = torch.sparse.mm(Jt.t(), g).reshape(ctx.shape)
        return grad, None, None


class TorchForward:
    """Differentiable traveltimes of an operator for batches of slowness tensors.

    Start ``b`` of a batch gets the traveltimes of rays ``rays[ray_index[b]]``
    through ``slowness[b]``; the backward pass returns ``J_bᵀ g_b``. Only the
    requested rays are computed, so a mini-batch costs a fraction of the survey.

    - Linear operators (``operator.is_linear``): the kernel is built once and kept
      on ``device``, dense or sparse (CSR, with a CSR transpose for the backward pass;
      see ``kernel``).
    - Nonlinear operators: traveltimes and Jacobian rows are computed on the CPU with
      NumPy / SciPy (for :class:`~skvaeinv.forward.ShortestPath`, one Dijkstra per
      distinct source, or receiver by reciprocity, of the requested rays), and only
      the Jacobian rows travel to ``device`` for the backward pass.

    Parameters
    ----------
    operator : ForwardOperator
        Any operator following the protocol of :mod:`skvaeinv.forward`.
    rays : array-like of shape (n_rays, 4)
        The survey's rays (``xs, zs, xr, zr``); ``ray_index`` refers to its rows.
    device : str or torch.device, default="cpu"
        Where inputs and outputs live.
    dtype : torch.dtype, default=torch.float32
        Dtype of the cached linear kernel (use ``torch.float64`` for gradient checks).
    kernel : {"auto", "dense", "sparse"}, default="auto"
        Storage of a linear operator's kernel. "auto" keeps it dense when it has at most
        5e7 entries of which at least 20 % are non-zero, else sparse: a straight-ray
        kernel (about 1 % non-zero) is then stored as CSR, and the full forward and its
        gradient cost about a tenth of the dense products. Ignored for nonlinear
        operators.

    Attributes
    ----------
    n_rays : int
        Number of rays of the survey.
    rays : ndarray of shape (n_rays, 4)
        The validated rays.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skvaeinv.survey import Grid2D, crosshole
    >>> from skvaeinv.forward import StraightRay, TorchForward
    >>> grid = Grid2D((8, 4), 0.5)
    >>> rays = crosshole(grid, [0.5, 1.5, 2.5])
    >>> fwd = TorchForward(StraightRay(grid), rays)
    >>> s = torch.full((2, grid.n_cells), 12.5, requires_grad=True)
    >>> t = fwd(s, torch.tensor([[0, 4], [8, 1]]))
    >>> t.shape
    torch.Size([2, 2])
    """

    def __init__(self, operator: ForwardOperator, rays: Any, device: Any = "cpu",
                 dtype: torch.dtype = torch.float32, kernel: str = "auto") -> None:
        if not isinstance(operator, ForwardOperator):
            raise ValueError(
                f"operator={operator!r} is not valid; expected a skvaeinv.forward."
                "ForwardOperator (e.g. StraightRay or ShortestPath)."
            )
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype={dtype!r} is not valid; expected a torch floating "
                             "point dtype such as torch.float32 or torch.float64.")
        self.operator = operator
        # a copy: later edits of the caller's array must not change this survey
        self.rays = operator.validate_rays(rays).copy()
        self.n_rays = int(self.rays.shape[0])
        self.n_cells = int(operator.grid.n_cells)
        self.device = resolve_device(device)
        self.dtype = dtype
        if kernel not in ("auto", "dense", "sparse"):
            raise ValueError(f"kernel must be 'auto', 'dense' or 'sparse', got {kernel!r}.")
        self.kernel = kernel
        self._kernel: torch.Tensor | None = None
        self._kernel_t: torch.Tensor | None = None  # set for a sparse kernel only
        self._evaluate = None
        if not operator.is_linear:
            self._build_evaluator()
        else:
            J = operator.jacobian(None, self.rays).tocsr()
            n_entries = J.shape[0] * J.shape[1]
            dense = kernel == "dense" or (
                kernel == "auto" and n_entries <= _DENSE_LIMIT
                and J.nnz >= _DENSE_FRACTION * n_entries)
            if dense:
                self._kernel = torch.as_tensor(J.toarray(), dtype=dtype, device=self.device)
            else:
                self._kernel = _csr(J, dtype, self.device)
                self._kernel_t = _csr(J.T, dtype, self.device)

    @property
    def _sparse(self) -> bool:
        return self._kernel_t is not None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_evaluate"] = None  # a closure over per-survey caches: rebuilt on demand
        return state

    # -- helpers ---------------------------------------------------------------------
    def _build_evaluator(self) -> None:
        """The operator's subset evaluator, and whether it takes ``jacobian=``."""
        self._evaluate = self.operator._subset_evaluator(self.rays)
        try:
            params = inspect.signature(self._evaluate).parameters.values()
        except (TypeError, ValueError):   # no signature to read: the older form
            params = ()
        # an operator's own evaluator of the older (s, idx) form always returns the
        # Jacobian rows too
        self._evaluate_takes_jacobian = any(
            p.name == "jacobian" or p.kind is p.VAR_KEYWORD for p in params)

    def _nonlinear_rows(self, s: np.ndarray, idx: np.ndarray, jacobian: bool = True
                        ) -> tuple:
        if self._evaluate is None:
            self._build_evaluator()
        idx = np.asarray(idx)
        if jacobian:
            return self._evaluate(s, idx)
        if self._evaluate_takes_jacobian:
            return self._evaluate(s, idx, jacobian=False)
        return self._evaluate(s, idx)[0], None

    def _check(self, slowness: torch.Tensor, ray_index: Any) -> torch.Tensor | None:
        if not isinstance(slowness, torch.Tensor):
            raise ValueError(f"slowness must be a torch.Tensor; got {type(slowness).__name__}.")
        if slowness.ndim != 2 or slowness.shape[1] != self.n_cells:
            raise ValueError(
                f"slowness has shape {tuple(slowness.shape)}; expected (B, {self.n_cells})."
            )
        if ray_index is None:
            return None
        idx = torch.as_tensor(ray_index)
        if idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise ValueError(f"ray_index must hold integers; got dtype {idx.dtype}.")
        if idx.ndim == 1:
            idx = idx.expand(slowness.shape[0], -1)
        if idx.ndim != 2 or idx.shape[0] != slowness.shape[0]:
            raise ValueError(
                f"ray_index has shape {tuple(idx.shape)}; expected (B, k) with "
                f"B = {slowness.shape[0]}."
            )
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.n_rays):
            raise ValueError(
                f"ray_index values must lie in [0, {self.n_rays - 1}]; got "
                f"[{int(idx.min())}, {int(idx.max())}]."
            )
        return idx.long()  # any integer dtype; torch indexes with int64 (uint8 = a mask)

    # -- public ---------------------------------------------------------------------
    def __call__(self, slowness: torch.Tensor, ray_index: Any = None) -> torch.Tensor:
        """Traveltimes ``(B, k)`` (or ``(B, n_rays)`` when ``ray_index`` is None).

        Parameters
        ----------
        slowness : torch.Tensor of shape (B, n_cells)
            One slowness model per start, on any device; differentiable.
        ray_index : LongTensor of shape (B, k) or (k,), default=None
            Rows of ``rays`` to evaluate for each start; a 1-D index is shared by
            all starts. None means all rays.

        Returns
        -------
        torch.Tensor of shape (B, k) or (B, n_rays)
            Traveltimes of the selected rays through each model, differentiable in ``slowness``.
        """
        idx = self._check(slowness, ray_index)
        if self._sparse and slowness.dtype in (torch.bfloat16, torch.float16):
            # torch has no half-precision sparse products on every device: float32 here
            return self(slowness.float(), ray_index).to(slowness.dtype)
        if self._kernel is not None:
            K, KT = self._kernel, self._kernel_t
            if K.dtype != slowness.dtype or K.device != slowness.device:
                K = K.to(device=slowness.device, dtype=slowness.dtype)
                if KT is not None:
                    KT = KT.to(device=slowness.device, dtype=slowness.dtype)
            if self._sparse:
                full = _SparseKernelProduct.apply(slowness, K, KT)
                return full if idx is None else torch.gather(full, 1, idx.to(full.device))
            if idx is None:
                return slowness @ K.t()
            rows = K[idx.to(K.device)]  # (B, k, N)
            return torch.bmm(rows, slowness.unsqueeze(-1)).squeeze(-1)
        if slowness.shape[0] == 0:  # no models: no paths to compute
            return slowness.new_zeros((0, self.n_rays if idx is None else idx.shape[-1]))
        if idx is None:
            idx_np = np.broadcast_to(np.arange(self.n_rays), (slowness.shape[0], self.n_rays))
        else:
            idx_np = idx.cpu().numpy()
        if not (torch.is_grad_enabled() and slowness.requires_grad):
            # no gradient wanted (e.g. the full-data cost): times only, no Jacobian rows
            times, _ = _host_rows(slowness, self, idx_np, jacobian=False)
            return torch.from_numpy(times).to(device=slowness.device, dtype=slowness.dtype)
        return _NonlinearTraveltimes.apply(slowness, self, idx_np)

    def full(self, slowness: torch.Tensor) -> torch.Tensor:
        """Traveltimes of all rays, ``(B, n_rays)``; same as ``self(slowness)``.

        Parameters
        ----------
        slowness : torch.Tensor of shape (B, n_cells)
            One slowness model per start, on any device; differentiable.

        Returns
        -------
        torch.Tensor of shape (B, n_rays)
            Traveltimes of every ray of the survey through each model.
        """
        return self(slowness, None)

    def __repr__(self) -> str:
        return (f"TorchForward({self.operator!r}, n_rays={self.n_rays}, "
                f"device={str(self.device)!r})")
