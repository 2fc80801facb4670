"""The report figures say what their marks mean: Fig. 4.2's legend covers no bar, the training
curves name their y quantity and which line is which k-fold unit, every Fig. 4.1 row (a 20-class
Dark Zurich row too) names the classes its colours show. Drawn with Agg; nothing is timed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mopeft.report.curves import Run, training_curves_figure
from mopeft.report.examples import Example, examples_figure, examples_frame
from mopeft.report.figures import MODULES, gate_counts, gate_frequency_figure, layer_means


def _gate_frames(datasets: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every module's gate above the threshold everywhere: all bars of panel (a) at full height,
    so no corner of that panel is free for a legend."""
    counts, layers = [], []
    for i, dataset in enumerate(datasets):
        gates = {m: np.full((4, 6), 0.9 + 0.02 * j) for j, m in enumerate(MODULES)}
        gates["LoRA"][0, i] = 0.2  # not all identical
        key = {"dataset": dataset, "label": dataset, "variant": "default", "seed": 0}
        counts.append(gate_counts(gates).assign(**key, images=4))
        layers.append(layer_means(gates).assign(**key))
    return pd.concat(counts, ignore_index=True), pd.concat(layers, ignore_index=True)


def test_gate_frequency_legend_covers_no_bar() -> None:
    import matplotlib.pyplot as plt

    for datasets in (["kvasir_instrument", "floodnet"], ["kvasir_instrument"]):
        fig = gate_frequency_figure(*_gate_frames(datasets))
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
        assert len(legends) == 1, "one legend for the two bar panels"
        assert [t.get_text() for t in legends[0].get_texts()] == list(MODULES)
        box = legends[0].get_window_extent(renderer)
        bars = [p for ax in fig.axes[:2] for p in ax.patches if p.get_height() > 0]
        assert len(bars) >= 3 * len(datasets)
        covered = [p for p in bars if p.get_window_extent(renderer).overlaps(box)]
        assert not covered, f"legend {box} covers {len(covered)} bar(s)"
        plt.close(fig)


def _run(dataset: str, method: str, unit: str, losses: list[float], seed: int = 0) -> Run:
    return Run(dataset, method, "default", seed, unit, tuple(losses), Path("train_log.json"))


def test_training_curves_have_a_y_label_and_a_unit_legend() -> None:
    import matplotlib.pyplot as plt

    falling, flat = list(np.linspace(1.0, 0.3, 20)), [0.7] * 20
    runs = [
        _run("dark_zurich", "lora", "fold0", falling),
        _run("dark_zurich", "lora", "fold1", [v + 0.05 for v in falling]),
        _run("dark_zurich", "baseline", "fold0", flat),
        _run("dark_zurich", "baseline", "fold1", flat),
        _run("kvasir_instrument", "lora", "main", falling),
    ]
    fig = training_curves_figure(runs)
    assert "loss" in fig.get_supylabel()
    (legend,) = fig.legends
    entries = [t.get_text() for t in legend.get_texts()]
    assert entries[:3] == ["fold0", "fold1", "main"]
    assert entries[3].startswith("‡ loss did not fall")  # the red frame of the baseline's panel
    # a line's colour is its unit's legend colour in every panel
    handles = dict(zip(entries, legend.legend_handles, strict=True))
    lines = fig.axes[0].get_lines()  # dark_zurich / lora
    assert [line.get_color() for line in lines] == [
        handles["fold0"].get_color(),
        handles["fold1"].get_color(),
    ]
    plt.close(fig)
    fig = training_curves_figure([*runs[:2], _run("dark_zurich", "lora", "fold0", falling, seed=1)])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "fold0 seed 0",
        "fold1 seed 0",
        "fold0 seed 1",
    ]
    plt.close(fig)


def test_every_examples_row_has_a_legend_of_the_classes_it_shows(tmp_path: Path) -> None:
    """20 classes (Dark Zurich's count) used to mean no legend at all."""
    import matplotlib.pyplot as plt

    classes = tuple(f"class {i}" for i in range(20))
    examples = []
    for n, present in enumerate(([0, 3, 17], [1, 2])):
        label = np.full((16, 24), present[0], dtype=np.uint8)
        label[:, 8:16] = present[1]
        label[:, 16:] = present[-1]
        label[0, 0] = 255  # ignore: not a class
        paths = {}
        for name, array in (
            ("label", label),
            ("mopeft", np.where(label == 255, present[0], label)),
            ("baseline", None),
        ):
            paths[name] = tmp_path / f"{n}_{name}.png"
            Image.fromarray(np.full((16, 24), 5, np.uint8) if array is None else array.astype(np.uint8)).save(
                paths[name]
            )
        image = tmp_path / f"{n}_image.png"
        Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(image)
        predictions = {"baseline": paths["baseline"], "mopeft": paths["mopeft"]}
        examples.append(
            Example(
                "dark_zurich", "Dark Zurich", "fold0", f"img{n}", image, paths["label"], predictions, classes
            )
        )
    methods = ["baseline", "mopeft"]
    fig = examples_figure(examples, methods, examples_frame(examples, methods))
    axes = np.asarray(fig.axes).reshape(len(examples), -1)
    shown = [[t.get_text() for t in row[-1].get_legend().get_texts()] for row in axes]
    assert shown == [["class 0", "class 3", "class 5", "class 17"], ["class 1", "class 2", "class 5"]]
    plt.close(fig)
