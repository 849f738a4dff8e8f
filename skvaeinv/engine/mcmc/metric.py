"""The inverse mass matrix (metric) of MALA and HMC, and its warm-up estimate.

The metric ``C`` (the inverse mass matrix) is an estimate of the posterior covariance:
MALA proposes ``z' = z + ε²/2 C ∇log π(z) + ε L ξ`` with ``C = L Lᵀ``, HMC draws its
momentum from ``N(0, C⁻¹)`` and moves by ``ε C p``. Each chain has its own (a batch of
matrices), so that chains at different temperatures can have different ones.
"""

from __future__ import annotations

import torch

__all__ = ["REGULARISATION_DRAWS", "REGULARISATION_TARGET", "Metric", "estimate_metric",
           "metric_from_precision"]

#: Stan's regularisation of the estimate: ``n / (n + 5) C + 1e-3 · 5 / (n + 5) I``.
REGULARISATION_DRAWS = 5.0
REGULARISATION_TARGET = 1e-3


class Metric:
    """The inverse mass matrix of every chain: the identity, diagonal or dense.

    Parameters
    ----------
    kind : {"identity", "diag", "dense"}
        Its form.
    inv_mass : torch.Tensor or None, default=None
        None for the identity; the diagonals ``(n_chains, d)`` or the matrices
        ``(n_chains, d, d)`` (symmetric positive definite), float64.

    Attributes
    ----------
    factor : torch.Tensor or None
        ``L`` with ``C = L Lᵀ``: the square roots of the diagonal, or the lower Cholesky
        factor.

    Examples
    --------
    >>> import torch
    >>> m = Metric("diag", torch.tensor([[4.0, 1.0]], dtype=torch.float64))
    >>> m.scaled_noise(torch.ones(1, 2, dtype=torch.float64))
    tensor([[2., 1.]], dtype=torch.float64)
    """

    def __init__(self, kind: str, inv_mass: torch.Tensor | None = None) -> None:
        self.kind = kind
        self.inv_mass = inv_mass
        if kind == "identity":
            self.factor = None
        elif kind == "diag":
            self.factor = torch.sqrt(inv_mass)
        else:
            self.factor = torch.linalg.cholesky(inv_mass)

    def _multiply(self, matrix: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """``M x`` for each chain, ``M`` the identity, a diagonal or a matrix.

        ``matrix`` is ``self.factor`` or ``self.inv_mass`` (the diagonals or matrices
        of the metric's kind; ignored for the identity).
        """
        if self.kind == "identity":
            return x
        if self.kind == "diag":
            return matrix * x
        return (matrix @ x[..., None])[..., 0]

    def _solve_factor(self, x: torch.Tensor, transpose: bool) -> torch.Tensor:
        """``L⁻¹ x``, or ``L⁻ᵀ x`` when ``transpose``, for each chain."""
        if self.kind == "identity":
            return x
        if self.kind == "diag":
            return x / self.factor
        triangle = self.factor.transpose(-1, -2) if transpose else self.factor
        return torch.linalg.solve_triangular(triangle, x[..., None], upper=transpose)[..., 0]

    def scaled_noise(self, xi: torch.Tensor) -> torch.Tensor:
        """``L ξ``: a draw of ``N(0, C)`` from a standard normal ``ξ``.

        Parameters
        ----------
        xi : torch.Tensor of shape (n_chains, d)
            Standard normal draws.

        Returns
        -------
        noise : torch.Tensor of shape (n_chains, d)
            One draw of ``N(0, C)`` per chain, ``L ξ``.
        """
        return self._multiply(self.factor, xi)

    def momentum(self, xi: torch.Tensor) -> torch.Tensor:
        """``L⁻ᵀ ξ``: a draw of ``N(0, C⁻¹)`` (HMC's momentum).

        Parameters
        ----------
        xi : torch.Tensor of shape (n_chains, d)
            Standard normal draws, independent of the position.

        Returns
        -------
        momentum : torch.Tensor of shape (n_chains, d)
            HMC's initial momentum of each chain, ``L⁻ᵀ ξ``.
        """
        return self._solve_factor(xi, transpose=True)

    def velocity(self, p: torch.Tensor) -> torch.Tensor:
        """``C p``.

        Parameters
        ----------
        p : torch.Tensor of shape (n_chains, d)
            Momenta (HMC) or log-density gradients (MALA's drift).

        Returns
        -------
        velocity : torch.Tensor of shape (n_chains, d)
            ``C p``: HMC's position update per unit step, or MALA's drift direction.
        """
        return self._multiply(self.inv_mass, p)

    def mahalanobis(self, u: torch.Tensor) -> torch.Tensor:
        """``uᵀ C⁻¹ u = ||L⁻¹ u||²``.

        Parameters
        ----------
        u : torch.Tensor of shape (n_chains, d)
            Vectors, e.g. differences of positions.

        Returns
        -------
        sq_norm : torch.Tensor of shape (n_chains,)
            Their squared Mahalanobis norms.
        """
        v = self._solve_factor(u, transpose=False)
        return (v * v).sum(-1)

    def kinetic_energy(self, p: torch.Tensor) -> torch.Tensor:
        """``½ pᵀ C p``.

        Parameters
        ----------
        p : torch.Tensor of shape (n_chains, d)
            Momenta.

        Returns
        -------
        energy : torch.Tensor of shape (n_chains,)
            Kinetic energy of each chain's momentum.
        """
        return 0.5 * (p * self.velocity(p)).sum(-1)


def estimate_metric(draws: torch.Tensor, kind: str, groups: torch.Tensor) -> Metric:
    """The metric estimated from warm-up draws, pooled over the chains of a group.

    The covariance (or variances) of all draws of the chains sharing a group (a
    temperature) pooled, regularised as Stan does:
    ``n / (n + 5) · Ĉ + 10⁻³ · 5 / (n + 5) · I`` with ``n`` the number of pooled draws.

    Parameters
    ----------
    draws : torch.Tensor of shape (n_draws, n_chains, d)
        Warm-up positions (float64).
    kind : {"identity", "diag", "dense"}
        The metric's form.
    groups : torch.Tensor of shape (n_chains,)
        Group label (0 to ``n_groups - 1``) of each chain.

    Returns
    -------
    Metric
        Each chain's metric, the estimate of its group.
    """
    if kind == "identity":
        return Metric("identity")
    _, n_chains, d = draws.shape
    eye = torch.eye(d, dtype=draws.dtype, device=draws.device)
    out = (torch.empty(n_chains, d, dtype=draws.dtype, device=draws.device) if kind == "diag"
           else torch.empty(n_chains, d, d, dtype=draws.dtype, device=draws.device))
    for g in torch.unique(groups).tolist():
        members = groups == g
        x = draws[:, members].reshape(-1, d)
        n = x.shape[0]
        cov = torch.cov(x.T).reshape(d, d) if n > 1 else eye.clone()
        shrink = n / (n + REGULARISATION_DRAWS)
        reg = cov * shrink + REGULARISATION_TARGET * (1 - shrink) * eye
        out[members] = torch.diagonal(reg) if kind == "diag" else reg
    return Metric(kind, out)


def metric_from_precision(precision: torch.Tensor) -> Metric:
    """The dense metric ``C = H⁻¹`` of each chain from its precision ``H``.

    Parameters
    ----------
    precision : torch.Tensor of shape (n_chains, d, d)
        Symmetric positive definite matrices (float64), e.g. Gauss-Newton Hessians.

    Returns
    -------
    Metric
        The dense metric of each chain.

    Examples
    --------
    >>> import torch
    >>> h = torch.tensor([[[4.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    >>> metric_from_precision(h).inv_mass.diagonal(dim1=1, dim2=2).tolist()
    [[0.25, 1.0]]
    """
    return Metric("dense", torch.cholesky_inverse(torch.linalg.cholesky(precision)))
