"""The study's tables, declared once: key, builder, what it is built from, and the study's CSVs.

Standard library only: the Snakemake DAG reads this table at start-up to decide which table jobs
exist, what each waits for (only its own cells) and which of the study's CSVs it reads (declared
inputs, so editing a study value rebuilds the table), and ``mopeft table`` reads it for its choices.

``inputs`` says what a builder is given:

* ``datasets``: the prepared datasets' ``meta.json`` (Tables 4.1, 4.2);
* ``cells``: the ``default`` cells of ``methods`` on every segmentation dataset (4.3, 4.4); with
  ``beyond``, also the run's methods beyond the study (config ``peft_methods``, listed in
  ``main.methods``), as extra columns after the study's, marked (4.4);
* ``efficiency``: params / FLOPs / bench JSONs of ``efficiency.methods`` (4.5);
* ``ablation``: the cells of the config's ablation study whose ``table`` is this key, plus the
  baseline cells; ``option`` is the method option it varies and ``variant_label`` names its cells
  (``r16``, ``L10``); the option's default value is the method's own default (4.6-4.8);
* ``detection``: the FAIR-1M ``ap.json`` of ``detection.methods`` (A.1).

Adding a table = one builder function + one line in ``TABLES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mopeft.errors import InputError

Inputs = Literal["datasets", "cells", "efficiency", "ablation", "detection"]


@dataclass(frozen=True)
class TableSpec:
    key: str  # CLI name and the config's reference, e.g. "4.3"
    builder: str  # "module:function"
    inputs: Inputs
    title: str
    methods: tuple[str, ...] = ()  # "cells": the method columns, in order
    beyond: bool = False  # "cells": the run's peft methods (beyond the study) as extra columns
    option: str = ""  # "ablation": the ablated method option
    variant_label: str = ""  # "ablation": prefix of the cells' variant names
    paper: tuple[str, ...] = ()  # stems of the study's CSVs (paper/<stem>.csv) it reads

    @property
    def stem(self) -> str:
        """File stem of the outputs (``table_4_3``) and the Snakemake ``{name}`` wildcard (``4_3``)."""
        return "table_" + self.wildcard

    @property
    def wildcard(self) -> str:
        return self.key.replace(".", "_")

    @property
    def module(self) -> str:
        return self.builder.split(":", 1)[0]


# The mIoU tables also read the ablation CSVs (the note on which ablation cell the main MoPEFT matches).
RESULT_CSVS = ("main_results", "ablation_lora_rank", "ablation_prefix_length", "ablation_adapter_dmid")

TABLES: dict[str, TableSpec] = {
    t.key: t
    for t in (
        TableSpec(
            "4.1",
            "mopeft.report.dataset_tables:build",
            "datasets",
            "Table 4.1: MESS datasets: sensor, segment size, number of classes and class similarity",
            paper=("main_results",),
        ),
        TableSpec(
            "4.2",
            "mopeft.report.dataset_tables:build",
            "datasets",
            "Table 4.2: MESS datasets: vocabulary, number of test images and task",
            paper=("main_results",),
        ),
        TableSpec(
            "4.3",
            "mopeft.report.main_tables:build",
            "cells",
            "Table 4.3: MoPEFT vs. baseline and decoder-only fine-tuning of SAM (mIoU, ours vs. the study)",
            methods=("baseline", "decoder_ft", "mopeft"),
            paper=RESULT_CSVS,
        ),
        TableSpec(
            "4.4",
            "mopeft.report.main_tables:build",
            "cells",
            "Table 4.4: MoPEFT vs. single PEFT methods on SAM (mIoU, ours vs. the study)",
            methods=("lora", "vpt_deep", "vpt", "adapter", "mopeft", "mopeft_logit"),
            beyond=True,
            paper=RESULT_CSVS,
        ),
        TableSpec(
            "4.5",
            "mopeft.report.efficiency:build_4_5",
            "efficiency",
            "Table 4.5: Trainable parameters and training/inference time relative to full fine-tuning",
            paper=("efficiency",),
        ),
        TableSpec(
            "4.6",
            "mopeft.report.ablations:build",
            "ablation",
            "Table 4.6: Effect of LoRA rank r on MoPEFT (mIoU, ours vs. the study)",
            option="r",
            variant_label="r",
            paper=RESULT_CSVS,
        ),
        TableSpec(
            "4.7",
            "mopeft.report.ablations:build",
            "ablation",
            "Table 4.7: Effect of prefix length L on MoPEFT (mIoU, ours vs. the study)",
            option="length",
            variant_label="L",
            paper=RESULT_CSVS,
        ),
        TableSpec(
            "4.8",
            "mopeft.report.ablations:build",
            "ablation",
            "Table 4.8: Effect of adapter bottleneck size D_mid on MoPEFT (mIoU, ours vs. the study)",
            option="dmid",
            variant_label="dmid",
            paper=RESULT_CSVS,
        ),
        TableSpec(
            "a1",
            "mopeft.report.table_a1:build",
            "detection",
            "Table A.1: FAIR-1M per-class AP@0.5 (%) of PEFT methods, ours vs. the study",
            paper=("fair1m_map", "fair1m_category_means"),
        ),
    )
}


def table_spec(key: str) -> TableSpec:
    try:
        return TABLES[key]
    except KeyError:
        raise InputError(f"unknown table {key!r}; known: {', '.join(TABLES)}") from None
