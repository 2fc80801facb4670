"""Writing a finished matplotlib figure as PNG (for the report) and PDF (for a paper) beside each
other, each atomically, so a failed job never leaves a half-written figure behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mopeft.io import atomic_path


def save_png_pdf(fig: Any, out_stem: str | os.PathLike[str], dpi: int) -> None:
    """``OUT_STEM.png`` and ``OUT_STEM.pdf`` from ``fig``, which is closed afterwards."""
    import matplotlib.pyplot as plt

    stem = Path(out_stem)
    for ext in ("png", "pdf"):
        with atomic_path(stem.with_name(f"{stem.name}.{ext}")) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi)
    plt.close(fig)
