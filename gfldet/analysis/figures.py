"""Writing the analysis figures (matplotlib ``Figure`` objects, no pyplot state) to image files."""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

__all__ = ["save_figure"]


def save_figure(fig: Figure, out_path: str | Path) -> Path:
    """Save ``fig`` to ``out_path`` (its format from the suffix), creating the folder; returns the path."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    return out_path
