"""Accuracy against budget from sweep records: a table, a figure and budget ratios; and
`show_figure`, the notebooks' way of displaying a figure."""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ppl.scaling import (
    accuracy_standard_error,
    binomial_interval,
    budget_ratio,
    budget_ratio_interval,
    curve_rises,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ppl.calibration import SBCResult


def show_figure(fig: Figure, name: str) -> None:
    """Display `fig` in a notebook; otherwise render it off screen and close it (so plotting
    errors surface in scripts and tests). With `PPL_NOTEBOOK_FIGURES=DIR` set, also save it
    as DIR/name.png."""
    import matplotlib.pyplot as plt

    figure_dir = os.environ.get("PPL_NOTEBOOK_FIGURES")
    if figure_dir:
        fig.savefig(os.path.join(figure_dir, f"{name}.png"), dpi=120)
    if "ipykernel" in sys.modules:
        plt.show()
    else:
        fig.canvas.draw()
        plt.close(fig)


def first_of_each(
    records: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], tuple | None]
) -> list[dict[str, Any]]:
    """`records` with each answered key once (its first line): two runs that wrote one file
    must not count a problem twice. Failed lines (`"failed": true`) and records whose key is
    None (hand-made, without a problem index) are all kept."""
    seen: set[tuple] = set()
    out = []
    for record in records:
        cell = None if record.get("failed") else key(record)
        if cell is not None:
            if cell in seen:
                continue
            seen.add(cell)
        out.append(record)
    return out


def accuracy_table(records: Sequence[dict[str, Any]]) -> dict[str, dict[int, dict[str, float]]]:
    """method -> budget -> {accuracy, standard_error, low, high, problems, tokens,
    verifier_calls, errors, failed} (means per problem; problems that errored count as wrong;
    cells a served model failed are left out and counted in `failed` until a re-run fills
    them; [low, high] is the 95% Wilson interval of the accuracy)."""
    records = first_of_each(
        records,
        lambda r: (
            (r.get("config_key"), r["method"], r["budget"], r["problem"])
            if "problem" in r
            else None
        ),
    )
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    failed: dict[tuple[str, int], set[Any]] = defaultdict(set)
    answered = {
        (r["method"], int(r["budget"]), r.get("problem")) for r in records if not r.get("failed")
    }
    for record in records:
        cell = (record["method"], int(record["budget"]))
        if not record.get("failed"):
            groups[cell].append(record)
        elif (*cell, record.get("problem")) not in answered:
            failed[cell].add(record.get("problem"))
            groups.setdefault(cell, [])
    table: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for (method, budget), rows in sorted(groups.items()):
        if not rows:  # every problem of the cell failed: nothing to report yet
            continue
        correct = np.asarray([bool(r.get("correct")) for r in rows], np.float64)
        spent = [r.get("spent") or {} for r in rows]
        low, high = binomial_interval(int(correct.sum()), len(rows))
        table[method][budget] = {
            "accuracy": float(correct.mean()),
            "standard_error": float(accuracy_standard_error(correct)),
            "low": low,
            "high": high,
            "problems": len(rows),
            "tokens": float(np.mean([s.get("tokens", 0) for s in spent])),
            "verifier_calls": float(np.mean([s.get("verifier_calls", 0) for s in spent])),
            "errors": sum(1 for r in rows if r.get("error")),
            "failed": len(failed[(method, budget)]),
        }
    return dict(table)


def rising(table: dict[str, dict[int, dict[str, float]]]) -> dict[str, bool]:
    """method -> whether its accuracy curve rises above its standard errors (`curve_rises`)."""
    return {
        method: curve_rises(
            [curve[b]["accuracy"] for b in sorted(curve)],
            [curve[b]["standard_error"] for b in sorted(curve)],
        )
        for method, curve in table.items()
    }


def budget_ratios(
    table: dict[str, dict[int, dict[str, float]]], method: str = "pf", at_budget: int | None = None
) -> dict[str, float | None]:
    """How many times less budget `method` needs to match each other method's accuracy at
    `at_budget` (default: the largest budget measured), interpolating in log budget. None
    where A never matches, and where either curve does not rise above its standard errors
    (`rising`): a ratio between flat curves (two all-zero curves, say) means nothing."""
    if method not in table:
        return {}
    rises = rising(table)
    ours = sorted(table[method])
    results: dict[str, float | None] = {}
    for other, curve in table.items():
        if other == method:
            continue
        budgets = sorted(curve)
        at = at_budget or budgets[-1]
        if at not in curve or not (rises[method] and rises[other]):
            results[other] = None
            continue
        results[other] = budget_ratio(
            ours,
            [table[method][b]["accuracy"] for b in ours],
            budgets,
            [curve[b]["accuracy"] for b in budgets],
            at,
        )
    return results


def ratio_intervals(
    records: Sequence[dict[str, Any]], method: str = "pf", seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Per other method, the 95% paired bootstrap interval of `method`'s budget ratio to it at
    its largest budget (`ppl.scaling.budget_ratio_interval`), over the problems every cell of
    both methods answered (failed cells left out)."""
    outcome: dict[tuple[str, int], dict[Any, float]] = defaultdict(dict)
    for record in records:
        if not record.get("failed"):
            key = (record["method"], int(record["budget"]))
            outcome[key][record.get("problem")] = float(bool(record.get("correct")))
    budgets: dict[str, list[int]] = defaultdict(list)
    for name, budget in sorted(outcome):
        budgets[name].append(budget)
    intervals: dict[str, tuple[float, float]] = {}
    if method not in budgets:
        return intervals
    rng = np.random.default_rng(seed)
    for other in budgets:
        if other == method:
            continue
        cells = [(method, b) for b in budgets[method]] + [(other, b) for b in budgets[other]]
        problems = sorted(set.intersection(*(set(outcome[c]) for c in cells)), key=str)
        if not problems:
            continue

        def matrix(name: str, problems: list[Any] = problems) -> np.ndarray:
            return np.asarray([[outcome[(name, b)][p] for b in budgets[name]] for p in problems])

        intervals[other] = budget_ratio_interval(
            rng, budgets[method], matrix(method), budgets[other], matrix(other), budgets[other][-1]
        )
    return intervals


def ratio_lines(
    table: dict[str, dict[int, dict[str, float]]],
    method: str = "pf",
    records: Sequence[dict[str, Any]] | None = None,
) -> list[str]:
    """One line per other method: `method`'s budget ratio to it (`budget_ratios`), "not reached",
    or "no ratio" naming the curves that do not rise above their standard errors. With the
    sweep's `records`, each ratio carries its 95% paired bootstrap interval (`ratio_intervals`)
    and is called "not decided" where the interval holds 1."""
    rises = rising(table)
    intervals = ratio_intervals(records, method) if records is not None else {}
    lines = []
    for other, ratio in budget_ratios(table, method).items():
        flat = [m for m in (method, other) if not rises[m]]
        if flat:
            verb = "does not rise above its" if len(flat) == 1 else "do not rise above their"
            text = f"no ratio: {' and '.join(flat)} {verb} standard errors"
        else:
            text = "not reached" if ratio is None else f"{ratio:.2f}x less budget"
            if ratio is not None and other in intervals:
                low, high = intervals[other]
                text += f" (95% bootstrap interval {low:.2f}x to {high:.2f}x"
                text += ": not decided)" if low <= 1 <= high else ")"
        lines.append(f"{method} vs {other}: {text}")
    return lines


def draw_accuracy(
    ax: Axes,
    table: dict[str, dict[int, dict[str, float]]],
    title: str = "",
    against: str = "budget",
) -> None:
    """Accuracy per method on `ax` with 95% Wilson intervals, against the nominal budget
    (`against="budget"`, generations per problem) or the generated tokens each problem
    actually cost (`against="tokens"`): methods that spend more tokens per generation (pgpt's
    tempered chains, say) move right. A log2 axis where every value is positive."""
    if against not in ("budget", "tokens"):
        raise ValueError(f"against must be 'budget' or 'tokens', got {against!r}")
    smallest = np.inf
    for method, curve in sorted(table.items()):
        budgets = sorted(curve)
        x = budgets if against == "budget" else [curve[b]["tokens"] for b in budgets]
        smallest = min(smallest, *x)
        accuracy = np.asarray([curve[b]["accuracy"] for b in budgets])
        below = accuracy - [curve[b]["low"] for b in budgets]
        above = np.asarray([curve[b]["high"] for b in budgets]) - accuracy
        ax.errorbar(x, accuracy, yerr=[below, above], marker="o", capsize=3, label=method)
    if smallest > 0:  # results without a token meter have 0 tokens: keep a linear axis
        ax.set_xscale("log", base=2)
    xlabel = "budget (generations per problem)" if against == "budget" else "tokens per problem"
    ax.set(xlabel=xlabel, ylabel="accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend()


def plot_accuracy(
    table: dict[str, dict[int, dict[str, float]]], path: str | Path, title: str = ""
) -> Path:
    """Accuracy against budget and against tokens spent (`draw_accuracy`), side by side, saved
    to `path` (without pyplot, so no backend is switched)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    by_budget, by_tokens = fig.subplots(1, 2, sharey=True)
    draw_accuracy(by_budget, table, title)
    draw_accuracy(by_tokens, table, "at the tokens they spent", against="tokens")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def format_table(table: dict[str, dict[int, dict[str, float]]]) -> str:
    budgets = sorted({b for curve in table.values() for b in curve})
    lines = [
        "accuracy [95% Wilson interval], and generated tokens per problem, at budget N "
        "(and problems that errored, counted wrong, or a served model failed, left out)"
    ]
    lines.append("method  " + "".join(f"{f'N={b}':>18}" for b in budgets))
    for method, curve in sorted(table.items()):
        cells = []
        for b in budgets:
            row = curve.get(b)
            cells.append(
                f"{row['accuracy']:.2f} [{row['low']:.2f},{row['high']:.2f}]" if row else ""
            )
        lines.append(f"{method:<8}" + "".join(f"{c:>18}" for c in cells))
        tokens = [f"{curve[b]['tokens']:.0f} tok" if b in curve else "" for b in budgets]
        lines.append(f"{'':<8}" + "".join(f"{c:>18}" for c in tokens))
        if any(row["errors"] or row["failed"] for row in curve.values()):
            failures = [
                f"{curve[b]['errors']} err, {curve[b]['failed']} failed" if b in curve else ""
                for b in budgets
            ]
            lines.append(f"{'':<8}" + "".join(f"{c:>18}" for c in failures))
    return "\n".join(lines)


def plot_sbc_ranks(result: SBCResult) -> Figure:
    """Per-dimension SBC rank histograms (`ppl.calibration.SBCResult`) with the band that
    holds 99% of each bin's count under uniformity, Binomial(P, 1/B) quantiles 0.005 and
    0.995 (Talts et al. 2018, fig. 1); built without pyplot."""
    from matplotlib.figure import Figure
    from scipy.stats import binom

    counts = np.asarray(result.counts)
    num_bins, dimension = counts.shape
    num_problems = int(counts[:, 0].sum())
    low, high = binom.ppf([0.005, 0.995], num_problems, 1 / num_bins)
    fig = Figure(figsize=(3 * dimension, 2.6))
    axes = fig.subplots(1, dimension, squeeze=False)[0]
    centres = (np.arange(num_bins) + 0.5) * (result.num_draws + 1) / num_bins
    width = (result.num_draws + 1) / num_bins
    for d, ax in enumerate(axes):
        ax.axhspan(low, high, color="0.85", label="99% band")
        ax.axhline(num_problems / num_bins, color="0.5", lw=1)
        ax.bar(centres, counts[:, d], width=width, color="C0", edgecolor="white")
        ax.set(
            xlim=(0, result.num_draws + 1),
            xlabel="rank",
            title=f"dim {d} (p = {result.p_values[d]:.2g})",
        )
    axes[0].set_ylabel("problems")
    axes[0].legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig
