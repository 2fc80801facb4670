"""Writing a finished matplotlib figure as PNG (for the report) and PDF (for a paper) beside each
other, each atomically, so a failed job never leaves a half-written figure behind."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mopeft.io import atomic_path
from mopeft.report.tables import METHOD_LABELS, Cell


def save_png_pdf(fig: Any, out_stem: str | os.PathLike[str], dpi: int) -> None:
    """``OUT_STEM.png`` and ``OUT_STEM.pdf`` from ``fig``, which is closed afterwards."""
    import matplotlib.pyplot as plt

    stem = Path(out_stem)
    for ext in ("png", "pdf"):
        with atomic_path(stem.with_name(f"{stem.name}.{ext}")) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi)
    plt.close(fig)


def method_labels(config: str | os.PathLike[str] | None, cells: Iterable[Cell]) -> dict[str, str]:
    """A figure's column title per method of ``cells``: the study's label, and a peft method's label
    from the run config (Table 4.4's source, mopeft.report.main_tables.beyond_methods), else its name."""
    # Imported here: main_tables imports the figure modules (curves), which import this one.
    from mopeft.report.main_tables import beyond_methods

    cells = list(cells)
    labels = {c.method: METHOD_LABELS.get(c.method, c.method) for c in cells}
    return labels | {m: label for m, label in beyond_methods(config, cells).items() if m in labels}
