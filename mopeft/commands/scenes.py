"""``mopeft scenes``: a folder of generated scenes with per-shape-type masks (a folder dataset).

The demo's own-data example: images no dataset registry knows, in exactly the form a user brings
(an ``images/`` and a ``masks/`` folder, class ids 0..3 in the masks), prepared by the config's
``custom_datasets`` path like any user's folders. The scenes are those the tiny SAM is pretrained
on (mopeft.data.synthetic.scenes), labelled by shape type instead of object/ground.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mopeft.errors import InputError

HELP = "write generated scenes as images/ + masks/ (class ids: background, ellipse, rectangle, triangle)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, required=True, help="number of scenes")
    parser.add_argument(
        "--seed", type=int, default=0, help="scene stream (each scene is a function of seed, index)"
    )
    parser.add_argument("--size", type=int, default=96, help="side of the square scenes in pixels")
    parser.add_argument("--out", required=True, type=Path, help="folder to write (replaced atomically)")


def run(args: argparse.Namespace) -> int:
    from mopeft.data.images import save_image, save_label
    from mopeft.data.synthetic.scenes import SCENE_CLASSES, labelled_scene
    from mopeft.io import atomic_dir

    if args.count < 1 or args.size < 16:
        raise InputError("--count must be >= 1 and --size >= 16")
    with atomic_dir(args.out) as tmp:
        for i in range(args.count):
            image, label = labelled_scene(args.seed, i, args.size)
            save_image(tmp / "images" / f"scene_{i:04d}.png", image)
            save_label(tmp / "masks" / f"scene_{i:04d}.png", label, len(SCENE_CLASSES))
    print(f"{args.out}: {args.count} scenes, classes {', '.join(SCENE_CLASSES)}")
    return 0
