"""What the pipeline knows about one dataset, independent of how it is prepared."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SourceKind = Literal["http", "gdrive", "git", "manual", "kaggle"]
ImageFormat = Literal["jpeg", "png"]
IMAGE_FORMATS: tuple[str, ...] = ("jpeg", "png")


@dataclass(frozen=True)
class Source:
    """One raw artefact a preparer needs, and how to obtain it.

    ``filename`` is the name the artefact has in the raw directory (``data/raw/<key>/``); a
    directory name is allowed for sources that are folders (git clones, manual downloads).
    Checksums are optional because most publishers give none (and none gives a sha256): when known
    they are checked before anything is extracted, and the sha256 of every file actually used is
    recorded in the prepared dataset's ``meta.json`` (``sources``) either way. A publisher that
    re-issued a file under a new md5 is covered by ``also_md5``; a git source is pinned by
    ``git_ref`` (a commit).
    """

    filename: str
    kind: SourceKind
    url: str = ""
    sha256: str | None = None
    md5: str | None = None
    also_md5: tuple[str, ...] = ()  # other published md5s of the same file (a re-issued release)
    gdrive_id: str | None = None
    git_ref: str | None = None
    instructions: str = ""  # for manual/kaggle sources: where to get it and where to put it
    required: bool = True

    @property
    def md5s(self) -> tuple[str, ...]:
        """Every md5 under which the publisher has released this file."""
        return tuple(m for m in (self.md5, *self.also_md5) if m)


@dataclass(frozen=True)
class DatasetSpec:
    key: str  # as in paper_tables/main_results.csv (or "fair1m")
    name: str  # display name used in the study's tables
    domain: str  # MESS domain, e.g. "Earth Monitoring"
    classes: tuple[str, ...]
    sources: tuple[Source, ...]
    expected_test: int | None  # MESS check count (per task for multi-task datasets); None: none published
    mess_key: str = ""  # MESS registered name, e.g. "isaid_sem_seg_val"
    expected_test_is_exact: bool = True  # False: a mismatch is a warning (FoodSeg103, ATLANTIS)
    channels: str = "RGB"  # "RGB", "IRRG", "thermal", ...
    train_split: Literal["official", "none"] = "official"  # "none": k-fold over the test set
    tasks: tuple[str, ...] = ()  # PAXRay-4: four independent binary tasks
    # Detection track (FAIR-1M, Appendix A): models also learn image-level class presence (the class
    # MLP), which Masks2Boxes uses to score boxes. Recorded in meta.json; `mopeft train` reads it.
    presence_head: bool = False
    # What a resource model needs to cost a job without the data (`mopeft plan`), for the default
    # preparation (1024² tiles where a dataset is tiled). Each module says how its numbers were derived.
    # expected_train: items of the prepared train split (tiles where tiled; per task for PAXRay-4);
    # None for k-fold datasets (train_split "none"): their training items follow from expected_test.
    expected_train: int | None = None
    # The file format of the prepared train/test images, i.e. what the loader decodes (JPEG decodes
    # about twice as fast as PNG); a few items may differ (e.g. CUB-200's grey JPEGs become PNGs).
    image_format: ImageFormat = "jpeg"
    # Typical (height, width) of a prepared image (the tile for tiled datasets, else the source size),
    # and the largest one where it differs a lot: evaluation maps the logits back to each label's
    # prepared size, so the largest test image bounds evaluation memory.
    image_hw: tuple[int, int] | None = None
    max_image_hw: tuple[int, int] | None = None
    # Facts for Tables 4.1 / 4.2 (as the study prints them; docs/datasets.md lists where MESS differs).
    sensor: str = "Visible Spectrum"
    segment_size: str = "Medium"
    class_similarity: str = "Low"
    vocabulary: str = "Generic"
    task_description: str = ""
    num_classes_label: str = ""  # e.g. "19 (Medium)", as printed in Table 4.1
    citation: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Classes the real release is known to lack in a split: preparation otherwise refuses a class
    # without a single pixel in a split (mopeft.data.prepared.coverage). Say in `notes` which split and why.
    allow_missing_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(
                f"{self.key}: image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}"
            )
        if unknown := [c for c in self.allow_missing_classes if c not in self.classes]:
            raise ValueError(f"{self.key}: allow_missing_classes {unknown} are not classes")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def largest_image_hw(self) -> tuple[int, int] | None:
        """(height, width) of the largest prepared image: ``max_image_hw``, else ``image_hw``."""
        return self.max_image_hw or self.image_hw
