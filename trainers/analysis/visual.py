"""Figures as PNG bytes (matplotlib's Agg canvas through Figure objects: no pyplot, no global backend).

t-SNE of each modality's time-pooled features before and after calibration and of the fused vector,
coloured by label and by perturbation; heatmaps of the scales; curves of the other analyses.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

LINE_STYLES = ("-", "--", ":", "-.")
STATUS_COLOURS = {
    "clean": "#9e9e9e",
    "conflict": "#d62728",
    "degraded": "#1f77b4",
    "other": "#ff7f0e",
    "unknown": "#000000",
}


def status_colours(statuses: list[str]) -> dict[str, str]:
    """A colour per perturbation status, by its kind (a status names the kind as its last word,
    "other modality perturbed" aside)."""

    def kind(status: str) -> str:
        return "other" if status.startswith("other") else status.split()[-1]

    order = sorted(set(statuses), key=lambda s: list(STATUS_COLOURS).index(kind(s)))
    return {s: STATUS_COLOURS[kind(s)] for s in order}


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


# ---- t-SNE -------------------------------------------------------------------------------------------


def embed_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE to 2-D (PCA to 50 dims first when wider, as scikit-learn recommends)."""
    x = np.asarray(x, np.float64)
    if x.shape[1] > 50 and len(x) > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    return TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed).fit_transform(x)


def _scatter_groups(ax, points: np.ndarray, groups: list[str], colours: dict[str, str], title: str) -> None:
    for name in colours:
        chosen = np.array([g == name for g in groups])
        if chosen.any():
            ax.scatter(
                points[chosen, 0],
                points[chosen, 1],
                s=14,
                c=colours[name],
                label=f"{name} ({chosen.sum()})",
                alpha=0.8,
                edgecolors="none",
            )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.legend(fontsize=7, loc="best", markerscale=1.2, framealpha=0.7)


def label_colours(labels: list[str]) -> dict[str, str]:
    names = sorted(set(labels), key=lambda v: (len(v), v))
    palette = [f"C{i}" for i in range(10)] if len(names) <= 10 else None
    if palette is None:
        cmap = colormaps["tab20"]
        palette = [cmap(i % 20) for i in range(len(names))]
    return dict(zip(names, palette))


def tsne_figure(
    views: list[tuple[str, np.ndarray]], labels: list[str], status: list[str] | None, title: str, seed: int = 0
) -> bytes:
    """One row per view (e.g. before / after calibration): coloured by label, and by perturbation status."""
    cols = 2 if status is not None else 1
    fig = Figure(figsize=(5.2 * cols, 4.4 * len(views)))
    fig.suptitle(title, fontsize=12)
    for r, (name, x) in enumerate(views):
        points = embed_2d(x, seed)
        _scatter_groups(
            fig.add_subplot(len(views), cols, r * cols + 1), points, labels, label_colours(labels), f"{name}: by label"
        )
        if status is not None:
            _scatter_groups(
                fig.add_subplot(len(views), cols, r * cols + 2),
                points,
                status,
                status_colours(status),
                f"{name}: by perturbation",
            )
    fig.subplots_adjust(
        left=0.8 / fig.get_figwidth(),
        right=0.97,
        bottom=0.6 / fig.get_figheight(),
        top=1 - 0.75 / fig.get_figheight(),
        wspace=0.3,
        hspace=0.3,
    )
    return png(fig)


# ---- scales ------------------------------------------------------------------------------------------


def _scale_norm(values: np.ndarray) -> TwoSlopeNorm:
    """Diverging around 1 (the identity), so up- and down-weighting read as two colours."""
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    spread = max(1 - low, high - 1, 1e-3)
    return TwoSlopeNorm(vcenter=1.0, vmin=1 - spread, vmax=1 + spread)


def instance_heatmap(
    instance: np.ndarray, present: np.ndarray, modalities: list[str], row_groups: list[str], perturbed: list[int | None]
) -> bytes:
    """Samples (sorted by group) x modalities; a black dot marks each sample's perturbed modality."""
    order = sorted(range(len(instance)), key=lambda i: (row_groups[i], i))
    values = np.where(present, instance, np.nan)[order]
    fig = Figure(figsize=(2.2 + 1.1 * len(modalities), min(14, 3 + 0.03 * len(order))))
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["RdBu"].with_extremes(bad="#c8c8c8")
    image = ax.imshow(values, aspect="auto", cmap=cmap, norm=_scale_norm(values), interpolation="nearest")
    marks = [(row, perturbed[i]) for row, i in enumerate(order) if perturbed[i] is not None]
    if marks:
        ax.scatter([c for _, c in marks], [r for r, _ in marks], s=6, c="black", marker="o")
    ax.set_xticks(range(len(modalities)), modalities)
    boundaries = [row for row in range(1, len(order)) if row_groups[order[row]] != row_groups[order[row - 1]]]
    for row in boundaries:
        ax.axhline(row - 0.5, color="black", linewidth=0.6)
    starts = [0, *boundaries]
    ax.set_yticks(starts, [row_groups[order[s]] for s in starts], fontsize=7)
    ax.set_xlabel("modality")
    ax.set_ylabel("test samples (grouped)")
    ax.set_title(
        "Instance scale g_m per sample\n(black dot: the perturbed modality; grey: modality missing)", fontsize=10
    )
    fig.colorbar(image, ax=ax, label="g_m (1 = unchanged)")
    fig.tight_layout()
    return png(fig)


def dimension_heatmap(rows_by_modality: dict[str, list[tuple[str, np.ndarray]]]) -> bytes:
    """Per modality, mean dimension scale r_m over groups of samples (rows) x feature dims (columns)."""
    fig = Figure(figsize=(10, 1.6 + 1.4 * len(rows_by_modality) + 0.25 * sum(map(len, rows_by_modality.values()))))
    fig.suptitle("Mean dimension scale r_m", fontsize=12)
    for k, (m, rows) in enumerate(rows_by_modality.items()):
        ax = fig.add_subplot(len(rows_by_modality), 1, k + 1)
        values = np.stack([v for _, v in rows])
        image = ax.imshow(values, aspect="auto", cmap="RdBu", norm=_scale_norm(values), interpolation="nearest")
        ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
        ax.set_xlabel(f"{m} feature dimension")
        ax.set_title(m, fontsize=10)
        fig.colorbar(image, ax=ax, label="r_m", fraction=0.03)
    fig.tight_layout()
    return png(fig)


# ---- curves ------------------------------------------------------------------------------------------


def removal_figure(section: dict, run_label: str, baseline_label: str | None) -> bytes:
    rows = section["rows"]
    names = ["none" if not r["removed"] else "-" + "-".join(r["removed"]) for r in rows]
    has_baseline = rows[0]["baseline"] is not None
    x = np.arange(len(rows))
    width = 0.4 if has_baseline else 0.7
    fig = Figure(figsize=(max(6, 1.1 * len(rows)), 4))
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(x - (width / 2 if has_baseline else 0), [r["run"] for r in rows], width, label=run_label)
    if has_baseline:
        ax.bar(x + width / 2, [r["baseline"] for r in rows], width, label=baseline_label)
    ax.set_xticks(x, names, rotation=20)
    ax.set_xlabel("modalities removed at test time")
    ax.set_ylabel(f"test {section['metric']}")
    ax.set_title("Modality removal", fontsize=11)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def curves_figure(panels: list[tuple[str, list, dict[str, list], str, str]], title: str, cols: int = 3) -> bytes:
    """Panels (title, x values, {label: y values}, x label, y label), one line per label; x is whole numbers
    (epochs, severities)."""
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.3 * rows))
    fig.suptitle(title, fontsize=12)
    for k, (name, xs, lines, xlabel, ylabel) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        for n, (label, ys) in enumerate(lines.items()):
            points = [(x, y) for x, y in zip(xs, ys) if y is not None]
            if points:
                ax.plot(*zip(*points), LINE_STYLES[n % len(LINE_STYLES)], marker="o", markersize=3, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    # Fixed margins (in inches) instead of tight_layout, which costs an extra draw of every panel.
    fig.subplots_adjust(
        left=0.7 / fig.get_figwidth(),
        right=0.98,
        bottom=0.6 / fig.get_figheight(),
        top=1 - 0.75 / fig.get_figheight(),
        wspace=0.32,
        hspace=0.9 / 3.3 * 1.6,
    )
    return png(fig)
