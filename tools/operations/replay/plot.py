"""The label transition matrix of a diff as a PNG (matplotlib, Agg: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_transitions(labels: Sequence[str], matrix: Sequence[Sequence[int]], title: str, path: Path) -> Path:
    """A heat map with the count in each cell; rows are live labels, columns replayed labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix, dtype=float).reshape(len(labels), len(labels))
    side = max(4.0, 1.0 + 0.7 * len(labels))
    figure, axes = plt.subplots(figsize=(side + 1.5, side))
    if not labels:
        axes.axis("off")
        axes.text(0.5, 0.5, "no decisions to compare", ha="center", va="center")
        axes.set_title(title)
        return _save(figure, path)
    image = axes.imshow(np.log1p(counts), cmap="Blues")  # log: the diagonal would drown every change
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("replay")
    axes.set_ylabel("live")
    axes.set_title(title)
    high = np.log1p(counts.max()) if counts.size else 0.0
    for row in range(len(labels)):
        for column in range(len(labels)):
            value = int(counts[row, column])
            if value:
                shade = "white" if np.log1p(value) > high * 0.6 else "black"
                axes.text(column, row, str(value), ha="center", va="center", color=shade, fontsize=8)
    figure.colorbar(image, ax=axes, label="log(1 + count)")
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
