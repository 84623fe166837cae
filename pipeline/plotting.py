"""matplotlib without a display (Agg): what the report and the learning-curve stage draw their PNGs with."""
from __future__ import annotations

from pathlib import Path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CI or servers
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: Path, plt) -> bool:
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True
