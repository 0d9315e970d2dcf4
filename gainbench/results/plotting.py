"""What every figure shares: matplotlib without a display, the percent change, one colour and
marker per method, and a diverging cell map centred on zero."""

from __future__ import annotations

import numpy as np

from gainbench.results.runs import method_of

GAIN_METHODS = ("gain", "gain_ffn")


def pyplot():
    """matplotlib's pyplot, drawing to files (imported on first use: the tables need none)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a cluster node
    import matplotlib.pyplot as plt

    return plt


def pct_change(delta_nll):
    """Perplexity change in percent from a change in NLL (nats)."""
    return 100.0 * np.expm1(delta_nll)


# One colour and one marker per method in every figure, so a method is recognised across panels.
METHOD_ORDER = ("gain", "gain_ffn", "lora", "full_ft", "ia3", "ia3_peft", "dora", "lora_l2",
                "replay_lora", "ewc", "lora_all", "lora_gain_modules")
_MARKERS = {"gain": "*", "gain_ffn": "*", "lora": "o", "full_ft": "s", "ia3": "D",
            "ia3_peft": "d", "dora": "^", "lora_l2": "v", "replay_lora": "<", "ewc": ">",
            "lora_all": "h", "lora_gain_modules": "p"}


def method_order(method: str) -> tuple:
    """Sort key for methods in legends and panels: ``METHOD_ORDER`` first, others by name; a
    front of a method at other options (``ewc (lam=1e7)``) beside its method."""
    base = method_of(method)
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), method)


def method_color(method: str) -> str:
    """A method's colour; a front of it at other options (``ewc (lam=1e7)``) keeps its marker
    and takes another colour, never the method's own."""
    base = method_of(method)
    known = base in METHOD_ORDER
    index = METHOD_ORDER.index(base) if known else len(METHOD_ORDER) + sum(map(ord, base))
    if method != base:
        index += 1 + sum(map(ord, method)) % 9
    return f"C{index % 10}"


def method_style(method: str) -> dict:
    """GAIN's variants stand out (filled stars, thick lines, drawn first); every baseline has
    its own open marker drawn above them, so a baseline whose points coincide with another
    method's (ia3 is GAIN's scaling through PEFT) still shows as a ring around it. Keyword
    arguments for ``plot`` / ``errorbar``."""
    color, base = method_color(method), method_of(method)
    if base in GAIN_METHODS:
        return {"marker": "*", "markersize": 14, "linewidth": 2.2, "zorder": 2, "color": color}
    return {"marker": _MARKERS.get(base, "o"), "markersize": 9, "linewidth": 1.2, "zorder": 3,
            "color": color, "markerfacecolor": "none", "markeredgewidth": 1.6}


def diverging_cells(ax, values: np.ndarray, **imshow_kwargs):
    """Draw ``values`` (percent changes) with a diverging map centred on zero, each cell
    labelled; a NaN cell (not measured: a run with ``eval.cells=matched``) is grey and labelled
    ``-``, never white, which is the map's zero. Returns the image for a colour bar."""
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm

    limit = max(float(np.nanmax(np.abs(values))), 1e-6)
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.8")
    image = ax.imshow(values, cmap=cmap, norm=TwoSlopeNorm(0.0, -limit, limit), **imshow_kwargs)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            label = "-" if np.isnan(values[i, j]) else f"{values[i, j]:+.1f}"
            ax.text(j, i, label, ha="center", va="center", fontsize=8)
    return image
