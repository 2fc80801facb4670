"""FAIR-1M detection track (thesis Appendix A): the frozen class vocabulary shared by its parts.

The class order is frozen here once, because three artefacts depend on it and must agree: the
rasterised label PNGs (id = index in :data:`SPEC_CLASSES`), the detector's per-class outputs and the
AP report. Within each category the order follows Table A.1; the three ``other-*`` classes, which
Table A.1 leaves out, close their category.
"""

from __future__ import annotations

import re

# category -> exact FAIR-1M XML class strings (as written in its annotation files)
CATEGORIES: dict[str, tuple[str, ...]] = {
    "Airplane": (
        "Boeing737", "Boeing747", "Boeing777", "Boeing787", "C919", "A220", "A321", "A330", "A350", "ARJ21",
        "other-airplane",
    ),
    "Ship": (
        "Passenger Ship", "Motorboat", "Fishing Boat", "Tugboat", "Engineering Ship", "Liquid Cargo Ship",
        "Dry Cargo Ship", "Warship", "other-ship",
    ),
    "Vehicle": (
        "Small Car", "Bus", "Cargo Truck", "Dump Truck", "Van", "Trailer", "Tractor", "Excavator",
        "Truck Tractor", "other-vehicle",
    ),
    "Court": ("Basketball Court", "Tennis Court", "Football Field", "Baseball Field"),
    "Road": ("Intersection", "Roundabout", "Bridge"),
}

CLASSES: tuple[str, ...] = tuple(c for names in CATEGORIES.values() for c in names)  # 37, ids 1..37
SPEC_CLASSES: tuple[str, ...] = ("background", *CLASSES)  # label-PNG ids 0..37
CLASS_CATEGORY: dict[str, str] = {c: cat for cat, names in CATEGORIES.items() for c in names}
# Table A.1 reports 34 classes: every class except the catch-all "other-*" ones.
TABLE_A1_CLASSES: tuple[str, ...] = tuple(c for c in CLASSES if not c.startswith("other-"))

assert len(CLASSES) == 37 and len(TABLE_A1_CLASSES) == 34


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


_BY_KEY = {_key(c): c for c in CLASSES}


def canonical_class(name: str) -> str | None:
    """Exact XML class string for ``name`` spelled with or without spaces/underscores
    ("PassengerShip", "Passenger_Ship", "passenger ship"), or None if it is not a FAIR-1M class.

    Why: Table A.1's CSV and DOTA-format converters spell names without spaces; matching them by a
    normalised key avoids a hand-kept alias table that could drift.
    """
    return _BY_KEY.get(_key(name))
