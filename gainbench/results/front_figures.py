"""The figures read off forgetting/adaptation fronts: the trade-off scatter (Figure 2, one per
model and training budget) and each method's earlier-domain change at matched in-domain gain
against the budget (``budget``). The fronts, the matched values and their intervals come from
``fronts``; ``figures`` registers and writes these with the rest. A change is *after - before*,
so negative = lower perplexity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gainbench.results.fronts import (BUDGET, DEFAULT_TARGETS, REFERENCES, front_points,
                                      matched_values, run_budget)
from gainbench.results.plotting import method_order, method_style, pyplot
from gainbench.results.runs import SCORING_KEYS, Run, compact_number, display_variant


def _point_labels(runs: list[Run]) -> dict[str, tuple[str, str]]:
    """run id -> (what tells the run's point from its method's other points, how to read it).
    A method swept over learning rates alone, from one default lr: the multiple of the default
    (``×4``, read as ``× lr 0.003``); a method with one point: its learning rate (``lr``); a
    sweep of anything else: the keys its variant differs in (``l2=10``, read as is)."""
    out = {}
    by_method: dict[tuple, list[Run]] = {}
    for run in runs:   # a figure is drawn per budget: the budget does not tell its points apart
        by_method.setdefault((run.model, run.front, run_budget(run)), []).append(run)
    for group in by_method.values():
        # nor does eval.cells (SCORING_KEYS): it moves no point; a method option names the front
        keys = {r.run_id: {k: v for k, v in r.variant_keys.items()
                           if k not in ("tokens_per_stage", *SCORING_KEYS, *r.option_keys)}
                for r in group}
        defaults = {r.config["method"].get("lr") for r in group}
        default = defaults.pop() if len(defaults) == 1 else None
        lr_only = all(set(keys[r.run_id]) <= {"lr"} for r in group)
        swept = len({r.lr for r in group}) > 1 if lr_only else True
        for run in group:
            if lr_only and swept and default:
                out[run.run_id] = (f"×{compact_number(round(run.lr / float(default), 4))}",
                                   f"× lr {compact_number(float(default))}")
            elif lr_only:
                out[run.run_id] = (compact_number(run.lr), "lr")
            else:
                out[run.run_id] = (", ".join(f"{k}={v}" for k, v in keys[run.run_id].items()), "")
    return out


def _tradeoff_points(runs: list[Run]) -> pd.DataFrame:
    """``fronts.front_points`` with the runs past the useful range kept (``past range``) and
    each point's label (``point``, ``reading``: ``_point_labels``); runs without an earlier
    domain have nothing to draw."""
    points = front_points(runs, past_range=True).dropna(subset=list(REFERENCES))
    labels = _point_labels(runs)
    points["point"] = [labels[run_id][0] for run_id in points["run_id"]]
    points["reading"] = [labels[run_id][1] for run_id in points["run_id"]]
    return points


def _budget_label(tokens, steps, short: bool = False) -> str:
    """``4 steps (4,096 tokens) per stage`` (``short``: ``4steps``), or the tokens alone where the
    steps are not known; "" when the run did not record its budget."""
    if tokens is None or pd.isna(tokens):
        return ""
    if steps is None or pd.isna(steps):
        return f"{int(tokens)}tokens" if short else f"{int(tokens):,} tokens per stage"
    return f"{int(steps)}steps" if short else f"{int(steps)} steps ({int(tokens):,} tokens) per stage"


def _coincident(means: pd.DataFrame, columns: list[str], tol: float = 0.005) -> dict[str, str]:
    """method -> an earlier method (in ``METHOD_ORDER``) every point of which it sits on, within
    ``tol`` of each axis's span: drawn there, it would hide or be hidden."""
    span = (means[columns].max() - means[columns].min()).replace(0, 1.0)
    shapes = {m: np.sort((g[columns] / span).to_numpy(), axis=0)
              for m, g in means.groupby("method")}
    methods = sorted(shapes, key=method_order)
    out = {}
    for i, method in enumerate(methods):
        for earlier in methods[:i]:
            a, b = shapes[method], shapes[earlier]
            if a.shape == b.shape and np.allclose(a, b, rtol=0, atol=tol):
                out[method] = earlier
                break
    return out


def _reading(readings: set[str]) -> str:
    """How to read the numbers at the points, from ``_point_labels``' second parts."""
    multiples = {r for r in readings if r.startswith("×")}
    if "" in readings:
        return "learning rate, or the setting the variant differs in"
    if not multiples:
        return "learning rate"
    return ("multiple of the method's default learning rate (legend)" if readings == multiples
            else "learning rate, or its multiple of the default where the legend says × lr")


# Where each method's point labels sit around its points (offset in points, alignment), so
# that labels of methods close together do not land on each other.
_LABEL_PLACES = ((-6, 5, "right", "bottom"), (6, -5, "left", "top"), (6, 5, "left", "bottom"),
                 (-6, -5, "right", "top"))


def tradeoff_scatter(runs: list[Run]):
    """Figure 2: in-domain gain against earlier-domain change, both references side by side,
    per model: one point per method variant (mean over seeds, bars = min..max over seeds), a
    method's variants joined along its front, each point labelled with its learning rate (or
    its multiple of the method's default lr in a sweep; or the setting its variant differs in).
    Every method has its own marker, baselines open and drawn above GAIN's filled stars, so
    points that coincide stay visible; the legend names a method whose points all coincide
    with another's. A run past its method's useful range (beaten on every axis by a lower
    learning rate of its seed) is a grey cross of its own, outside the fronts as the matched
    comparison leaves it out."""
    plt = pyplot()
    points = _tradeoff_points(runs)
    if points.empty:   # no run finished
        return []
    out = []
    budgets = points.groupby("model")[list(BUDGET)].nunique(dropna=False).max(axis=1)
    for (model, *budget), per_model in points.groupby(["model", *BUDGET], dropna=False):
        where = _budget_label(*budget)
        past = per_model[per_model["past range"]]
        on_front = per_model[~per_model["past range"]]
        means = on_front.groupby(["method", "variant"], as_index=False)[
            ["gain", "vs base", "vs just-trained"]].mean()
        on_top_of = _coincident(means, ["gain", "vs base", "vs just-trained"])
        methods = sorted(per_model["method"].unique(), key=method_order)
        fig, axes = plt.subplots(1, 2, figsize=(12, 5.4))
        for ax, reference in zip(axes, ["vs base", "vs just-trained"]):
            for i, method in enumerate(methods):
                per_method = on_front[on_front["method"] == method]
                if per_method.empty:
                    continue
                stats = per_method.groupby(["variant", "point"]).agg(
                    x=("gain", "mean"), y=(reference, "mean"),
                    x0=("gain", "min"), x1=("gain", "max"), y0=(reference, "min"),
                    y1=(reference, "max")).sort_values("x")
                reading = per_method["reading"].iloc[0]
                label = display_variant(method)
                label += f" ({reading})" if reading not in ("", "lr") else ""
                if method in on_top_of:
                    label += f", on {display_variant(on_top_of[method])}'s points"
                style = method_style(method)
                ax.plot(stats["x"], stats["y"], label=label,
                        **{**style, "linestyle": "-" if len(stats) > 1 else "none"})
                spread = stats[(stats["x1"] > stats["x0"]) | (stats["y1"] > stats["y0"])]
                ax.errorbar(spread["x"], spread["y"], fmt="none", capsize=2, ecolor=style["color"],
                            elinewidth=1, zorder=style["zorder"],
                            xerr=[spread["x"] - spread["x0"], spread["x1"] - spread["x"]],
                            yerr=[spread["y"] - spread["y0"], spread["y1"] - spread["y"]])
                if method in on_top_of:   # its labels would repeat the other method's
                    continue
                dx, dy, ha, va = _LABEL_PLACES[i % len(_LABEL_PLACES)]
                for (_, point), row in stats.iterrows():
                    ax.annotate(point, (row["x"], row["y"]), xytext=(dx, dy),
                                textcoords="offset points", ha=ha, va=va, fontsize=7,
                                color=style["color"], zorder=4)
            _draw_past_range(ax, past, reference)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xlabel("in-domain gain: -(mean in-domain PPL change) (%)")
            ax.set_ylabel(f"earlier domains, final PPL change {reference} (%)")
            ax.set_title(f"earlier-domain change {reference}\n(below 0 = better than "
                         f"{'the base model' if reference == 'vs base' else 'right after training'})",
                         fontsize=10)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8,
                   title="method (stars: GAIN; open markers: baselines, drawn on top)",
                   title_fontsize=8, bbox_to_anchor=(0.5, -0.02))
        fig.suptitle(f"{model}{f', {where}' if where else ''}: forgetting vs adaptation, one "
                     f"point per method variant; numbers: {_reading(set(per_model['reading']))}\n"
                     f"(mean over seeds, bars: seed range)"
                     + (f"; grey x: {len(past)} run(s) past the useful range, not on the fronts "
                        "(drawn where inside the axes)" if len(past) else ""), fontsize=11)
        fig.tight_layout(rect=(0, 0.05 + 0.04 * ((len(labels) - 1) // 4), 1, 1))
        # one figure per budget: a front never joins points of two budgets
        suffix = f"_{_budget_label(*budget, short=True)}" if budgets[model] > 1 else ""
        out.append((f"tradeoff_{model}{suffix}", fig))
    return out


def _draw_past_range(ax, past: pd.DataFrame, reference: str) -> None:
    """Runs past their method's useful learning rates, each alone (not joined, not averaged
    into a front point): grey crosses labelled with method, point and seed, so the reader sees
    what the fronts leave out; the axes stay those of the fronts (a run far past the range,
    LoRA at 128x with +146% on earlier domains, would squeeze every front into a corner), so a
    cross beyond them is not drawn."""
    if past.empty:
        return
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    ax.scatter(past["gain"], past[reference], marker="x", color="grey", s=30, zorder=1,
               label="past the useful range (left out)")
    for _, row in past.iterrows():
        ax.annotate(f"{display_variant(row['method'])} {row['point']} s{row['seed']}",
                    (row["gain"], row[reference]), xytext=(4, -4), textcoords="offset points",
                    ha="left", va="top", fontsize=6, color="grey")
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)


def budget_curves(runs: list[Run], at=None):
    """Each method's earlier-domain change at matched in-domain gain against the training budget
    per stage, per model: one panel per target gain (``at``, default ``fronts.DEFAULT_TARGETS``)
    and earlier-domain reference (rows: vs base, vs just-trained); x = optimiser steps per stage
    (tokens where the steps are not recorded), log scale; one line per method, the point at
    each budget the mean over seeds of each seed's front read at the target
    (``fronts.value_at``), bars its 95% interval. A method whose front does not reach a target
    at a budget is a gap in its line (never extrapolated, never bridged), the reason in the
    notes under the panels; runs that did not record their budget are named there and left
    out."""
    plt = pyplot()
    values = matched_values(runs, at or DEFAULT_TARGETS)
    if values.empty:
        return []
    out = []
    for model, per_model in values.groupby("model"):
        placed = per_model[per_model["tokens/stage"].notna()]
        if placed.empty:
            continue
        x_column = "steps/stage" if placed["steps/stage"].notna().all() else "tokens/stage"
        budgets = sorted(int(b) for b in placed[x_column].unique())
        targets = sorted(placed["at gain"].unique())
        methods = sorted(placed["method"].unique(), key=method_order)
        fig, axes = plt.subplots(len(REFERENCES), len(targets), squeeze=False, sharex=True,
                                 figsize=(3.4 * len(targets) + 1.2, 3.2 * len(REFERENCES) + 0.8))
        for row, reference in enumerate(REFERENCES):
            for col, target in enumerate(targets):
                ax = axes[row][col]
                panel = placed[(placed["earlier change"] == reference) & (placed["at gain"] == target)]
                for i, method in enumerate(methods):
                    line = panel[panel["method"] == method].set_index(x_column)["value lo hi".split()]
                    line = line.reindex(budgets)    # a budget the method has no value at: NaN, a gap
                    # methods side by side around each budget, so that their bars stay apart
                    x = np.array(budgets, float) * 2 ** (0.07 * (i - (len(methods) - 1) / 2))
                    style = method_style(method)
                    ax.plot(x, line["value"], label=display_variant(method), **style)
                    bars = line["lo"].notna().to_numpy()
                    ax.errorbar(x[bars], line["value"][bars], fmt="none", capsize=3,
                                ecolor=style["color"], elinewidth=1.2, zorder=style["zorder"],
                                yerr=[(line["value"] - line["lo"])[bars],
                                      (line["hi"] - line["value"])[bars]])
                if panel["value"].isna().all():
                    ax.text(0.5, 0.5, "no method reaches this gain\n(see the notes)", ha="center",
                            va="center", transform=ax.transAxes, color="grey", fontsize=9)
                ax.axhline(0, color="grey", lw=0.8)
                ax.set_xscale("log")
                ax.set_xticks(budgets, [compact_number(b) for b in budgets])
                ax.xaxis.set_minor_locator(plt.NullLocator())
                ax.set_xlim(budgets[0] / 1.6, budgets[-1] * 1.6)
                if row == 0:
                    ax.set_title(f"at {compact_number(float(target))}% in-domain gain", fontsize=10)
                if row == len(REFERENCES) - 1:
                    ax.set_xlabel(("optimiser steps" if x_column == "steps/stage"
                                   else "training tokens") + " per stage (log scale)")
                if col == 0:
                    ax.set_ylabel(f"earlier domains:\nPPL change {reference} (%)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                   title="method", title_fontsize=8)
        fig.suptitle(f"{model}: earlier-domain change at matched in-domain gain, against the "
                     f"training budget\n(negative = better; {_budget_axis(placed, x_column)})",
                     fontsize=10)
        fig.tight_layout()
        fig.text(0.01, 0, _budget_notes(per_model, placed, x_column, len(budgets)), fontsize=7,
                 va="top", ha="left", wrap=True)
        out.append((f"budget_{model}", fig))
    return out


def _budget_axis(placed: pd.DataFrame, x_column: str) -> str:
    """What the x values stand for: ``4 steps = 4,096 tokens; 16 steps = 16,384 tokens``."""
    if x_column != "steps/stage":
        return "x: train.tokens_per_stage; optimiser steps not recorded"
    pairs = placed[list(BUDGET)].drop_duplicates().sort_values("steps/stage")
    return "; ".join(f"{s} steps = {t:,} tokens" for t, s in pairs.itertuples(index=False))


def _budget_notes(per_model: pd.DataFrame, placed: pd.DataFrame, x_column: str,
                  n_budgets: int) -> str:
    """The caption under the panels: what the points and bars are, what each interval covers,
    every gap and every point without an interval with its reason, and what was left out."""
    unit = "steps" if x_column == "steps/stage" else "tokens"

    def where(row) -> str:
        return f"{display_variant(row['method'])} at {compact_number(int(row[x_column]))} {unit}"

    drawn = placed.dropna(subset=["lo"])
    covers = drawn["covers"].value_counts()
    covered = f"over {covers.index[0]}" if len(covers) else "none could be computed"
    lines = [f"Points: mean over seeds of each seed's front (earlier-domain change against "
             f"in-domain gain over its learning rates) read at the target gain, strictly inside its "
             f"measured points. Bars: 95% interval {covered}"]
    for other in covers.index[1:]:   # the points whose intervals cover something else, named
        named = drawn[drawn["covers"] == other].apply(
            lambda r: f"{where(r)} at {compact_number(float(r['at gain']))}% {r['earlier change']}",
            axis=1)
        lines[0] += f"; over {other} only for {', '.join(named)}"
    notes = []
    for _, row in placed.sort_values(["method", x_column, "at gain"]).iterrows():
        note = f"  {where(row)}: {'no value' if pd.isna(row['value']) else 'no interval'}, {row['reason']}"
        if row["reason"] and note not in notes:   # the two references share their reasons
            notes.append(note)
    lines[0] += (". Methods are drawn side by side around each budget; a missing point is a gap, "
                 "never extrapolated" + (":" if notes else "; every method reaches every target."))
    lines += notes
    if n_budgets == 1:
        lines.append("One budget only: nothing can be read about how the change moves with it.")
    unplaced = sorted(set(per_model.loc[per_model["tokens/stage"].isna(), "method"]),
                      key=method_order)
    if unplaced:
        lines.append("Left out (runs that did not record train.tokens_per_stage): "
                     + ", ".join(map(display_variant, unplaced)))
    return "\n".join(lines)
