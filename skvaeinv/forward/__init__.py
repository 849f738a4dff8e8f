"""Forward operators: traveltimes and Jacobians of crosshole surveys.

Every operator follows one small protocol (:class:`ForwardOperator`):

- ``traveltimes(slowness, rays)`` -> ``(n_rays,)`` for one model (``(nz, nx)`` or flat)
  or ``(B, n_rays)`` for a batch ``(B, ...)``;
- ``jacobian(slowness, rays)`` -> :class:`scipy.sparse.csr_matrix` ``(n_rays, n_cells)``,
  the length of each ray's path in each cell, with ``t = J @ s``.

Operators are scikit-learn estimators in the parameter sense (``get_params``,
``set_params``, :func:`sklearn.base.clone`), so a search over, e.g.,
``forward__secondary_nodes`` works. :class:`TorchForward` makes any operator usable
inside torch autograd, batched over models and over mini-batches of rays.

To plug in your own physics, subclass :class:`ForwardOperator` and implement
``_jacobian`` (see :mod:`skvaeinv.forward._base`), or wrap a precomputed sensitivity
matrix with :class:`MatrixOperator`.
"""

from ._base import ForwardOperator, MatrixOperator
from ._torch import TorchForward
from .shortest_path import ShortestPath
from .straight_ray import StraightRay, straight_ray_kernel

__all__ = [
    "ForwardOperator",
    "MatrixOperator",
    "StraightRay",
    "ShortestPath",
    "TorchForward",
    "straight_ray_kernel",
]
