"""Figures for the library's and the experiments' plots, without pyplot.

A ``matplotlib.figure.Figure`` made directly draws and saves with the Agg renderer and never
touches pyplot's global state, so a plot written here does not switch the user's backend (as
``matplotlib.use("Agg")`` would) nor leave figures open in a notebook. matplotlib is an optional
dependency (the ``plots`` extra), imported on first use.
"""

from __future__ import annotations

from ._optional import require

__all__ = ["subplots"]


def subplots(nrows: int = 1, ncols: int = 1, **kw):
    """A new Figure and its axes, as ``pyplot.subplots(nrows, ncols, **kw)`` returns them.

    kw: Figure arguments (figsize, dpi, ...) and ``squeeze`` / ``sharex`` / ``sharey`` for the
    axes. Returns (fig, ax) with ax an Axes or an (nrows, ncols) array of them (squeezed as
    pyplot does). Save with ``fig.savefig(path)``; there is nothing to close. Raises ImportError
    naming the ``plots`` extra without matplotlib.
    """
    figure = require("matplotlib.figure", "plots", "plotting")
    axes_kw = {k: kw.pop(k) for k in ("squeeze", "sharex", "sharey") if k in kw}
    fig = figure.Figure(**kw)
    return fig, fig.subplots(nrows, ncols, **axes_kw)
