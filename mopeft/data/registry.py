"""Dataset registry: key -> module under ``mopeft.data.datasets``.

Each dataset module defines ``SPEC`` (a :class:`~mopeft.data.spec.DatasetSpec`),
``prepare(raw_dir, out_dir, options)`` and ``write_miniature(raw_dir, seed)``.
Adding a dataset = one new module + one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from mopeft.data.spec import DatasetSpec
from mopeft.errors import UserError

# `mopeft prepare --from-mess` imports this by name (the DAG adds it to the prepare jobs' code hash
# only when config `data.mess_root` is set, so editing it re-prepares nothing else).
MESS_IMPORTER = "mopeft.data.prepared.mess_tree"

DATASETS: dict[str, str] = {
    # General
    "bdd100k": "mopeft.data.datasets.bdd100k",
    "dark_zurich": "mopeft.data.datasets.dark_zurich",
    "mhp_v1": "mopeft.data.datasets.mhp_v1",
    "foodseg103": "mopeft.data.datasets.foodseg103",
    "atlantis": "mopeft.data.datasets.atlantis",
    "dram": "mopeft.data.datasets.dram",
    # Earth Monitoring
    "isaid": "mopeft.data.datasets.isaid",
    "isprs_potsdam": "mopeft.data.datasets.isprs_potsdam",
    "worldfloods": "mopeft.data.datasets.worldfloods",
    "floodnet": "mopeft.data.datasets.floodnet",
    "uavid": "mopeft.data.datasets.uavid",
    # Medical Imaging
    "kvasir_instrument": "mopeft.data.datasets.kvasir_instrument",
    "chase_db1": "mopeft.data.datasets.chase_db1",
    "cryonuseg": "mopeft.data.datasets.cryonuseg",
    "paxray4": "mopeft.data.datasets.paxray4",
    # Engineering
    "corrosion_cs": "mopeft.data.datasets.corrosion_cs",
    "deepcrack": "mopeft.data.datasets.deepcrack",
    "pst900": "mopeft.data.datasets.pst900",
    # Agriculture and Biology
    "zerowaste_f": "mopeft.data.datasets.zerowaste_f",
    "suim": "mopeft.data.datasets.suim",
    "cub_200": "mopeft.data.datasets.cub_200",
    "cwfid": "mopeft.data.datasets.cwfid",
    # Detection (Appendix A)
    "fair1m": "mopeft.data.datasets.fair1m",
}


class UnknownDataset(UserError, KeyError, ValueError):
    """A dataset key that is not registered. A ``UserError``, so the CLI prints it as one line
    (``mopeft prepare: error: ...``) instead of a traceback; still a ``KeyError`` for lookups and a
    ``ValueError`` for callers that catch bad values."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def dataset_module(key: str) -> ModuleType:
    try:
        module_name = DATASETS[key]
    except KeyError:
        raise UnknownDataset(
            f"unknown dataset {key!r}; valid keys: {', '.join(DATASETS)} (see `mopeft datasets`)"
        ) from None
    return importlib.import_module(module_name)


def get_spec(key: str) -> DatasetSpec:
    return dataset_module(key).SPEC


def all_specs() -> list[DatasetSpec]:
    return [get_spec(k) for k in DATASETS]
