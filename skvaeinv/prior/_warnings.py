"""Warnings of the prior package, attributed to the line that called into it."""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["outside_stacklevel", "warn"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def outside_stacklevel() -> int:
    """Stacklevel of the first frame outside ``skvaeinv.prior``, seen from the caller.

    Counted as :func:`warnings.warn` counts for a call made by the caller of this
    function (1 = the caller's own line), so that a warning points at the user's
    line whichever public method of the package it went through.

    Returns
    -------
    stacklevel : int
        The level to pass to :func:`warnings.warn` in the caller.
    """
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    return level


def warn(message: str, category: type[Warning]) -> None:
    """:func:`warnings.warn` pointing at the first line outside ``skvaeinv.prior``.

    Parameters
    ----------
    message : str
        The warning's text.
    category : type of Warning
        Its class.
    """
    warnings.warn(message, category, stacklevel=outside_stacklevel())
