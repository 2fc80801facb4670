"""The study's own numbers (``paper/*.csv``), the reference every table compares against.

Why a copy inside the repository: the comparison must be reproducible from a checkout alone, and the
CSVs are tiny. The folder is found relative to the package (``<repo>/paper``) so commands work
from any working directory; ``MOPEFT_PAPER_DIR`` or an explicit argument overrides it (tests, forks).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mopeft.errors import InputError, MissingInput

ENV_VAR = "MOPEFT_PAPER_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]

# The study's ablation tables, by the MoPEFT option they vary: the CSV, the column prefix of each
# value, and how the study names the option.
ABLATIONS: dict[str, dict[str, str]] = {
    "r": {"file": "ablation_lora_rank", "prefix": "rank_", "label": "r"},
    "length": {"file": "ablation_prefix_length", "prefix": "L_", "label": "L"},
    "dmid": {"file": "ablation_adapter_dmid", "prefix": "dmid_", "label": "D_mid"},
}


def paper_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the study's CSVs: the argument, else ``$MOPEFT_PAPER_DIR``, else ``<repo>/paper``."""
    if override is not None:
        return Path(override)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else REPO_ROOT / "paper"


def load_paper_csv(name: str, directory: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """One of the study's tables by stem (e.g. ``main_results``), with an error naming the file."""
    path = paper_dir(directory) / f"{name}.csv"
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise MissingInput(
            f"{path}: the study's table is missing (copy it into paper/)"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None


def _require(
    df: pd.DataFrame, columns: list[str], name: str, directory: str | os.PathLike[str] | None
) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{paper_dir(directory) / (name + '.csv')}: missing column(s) {missing}")


def main_results(directory: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Tables 4.3/4.4: one row per MESS dataset in the study's order, domain and display name included."""
    df = load_paper_csv("main_results", directory)
    _require(df, ["domain", "dataset", "paper_name"], "main_results", directory)
    return df


def ablation(kind: str, directory: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Tables 4.6–4.8 by option (``r``, ``length``, ``dmid``): dataset, one column per value, baseline."""
    if kind not in ABLATIONS:
        raise KeyError(f"unknown ablation {kind!r}; known: {', '.join(ABLATIONS)}")
    name = ABLATIONS[kind]["file"]
    df = load_paper_csv(name, directory)
    _require(df, ["dataset"], name, directory)
    return df


def ablation_values(kind: str, directory: str | os.PathLike[str] | None = None) -> dict[int, str]:
    """Option value -> column name of an ablation CSV (``{4: "rank_4", 8: "rank_8", ...}``), in CSV order."""
    prefix = ABLATIONS[kind]["prefix"]
    out: dict[int, str] = {}
    for col in ablation(kind, directory).columns:
        if col.startswith(prefix) and col[len(prefix) :].isdigit():
            out[int(col[len(prefix) :])] = col
    return out


def efficiency(directory: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Table 4.5 (FloodNet): method, trainable_params_pct, train_time_pct, inference_time_pct."""
    df = load_paper_csv("efficiency", directory)
    _require(df, ["method"], "efficiency", directory)
    return df
