"""CUB-200-2011 (MESS key ``cub_200_sem_seg_test``): 200 bird species, one bird per image.

The segmentation masks come as a separate archive of soft masks (0-255, averaged over annotators);
MESS thresholds them at 128 and writes the bird pixels as the species number NNN taken from the
image's folder ``NNN.Class_Name`` (background 0). Splits follow ``train_test_split.txt``
(0 -> test, 5794 images; 1 -> train, 5994). Images are copied unchanged when already RGB JPEGs.

Checksums: Caltech publishes md5s for both archives (checked); there is no published sha256, so the
sha256 of each file used is recorded in ``meta.json`` (``sources``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mopeft.data.datasets.common import (
    PrepareError,
    PrepareOptions,
    extract,
    load_image,
    put_image,
    save_label,
    scratch_dir,
)
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import encode, mark_miniature, write_tar_gz

CLASSES = (
    "background", "Black-footed Albatross", "Laysan Albatross", "Sooty Albatross", "Groove billed Ani",
    "Crested Auklet", "Least Auklet", "Parakeet Auklet", "Rhinoceros Auklet", "Brewer Blackbird",
    "Red winged Blackbird", "Rusty Blackbird", "Yellow-headed Blackbird", "Bobolink", "Indigo Bunting",
    "Lazuli Bunting", "Painted Bunting", "Cardinal", "Spotted Catbird", "Gray Catbird",
    "Yellow-breasted Chat", "Eastern Towhee", "Chuck will Widow", "Brandt Cormorant", "Red-faced Cormorant",
    "Pelagic Cormorant", "Bronzed Cowbird", "Shiny Cowbird", "Brown Creeper", "American Crow", "Fish Crow",
    "Black-billed Cuckoo", "Mangrove Cuckoo", "Yellow-billed Cuckoo", "Gray-crowned Rosy-Finch",
    "Purple Finch", "Northern Flicker", "Acadian Flycatcher", "Great Crested Flycatcher",
    "Least Flycatcher", "Olive-sided Flycatcher", "Scissor-tailed Flycatcher", "Vermilion Flycatcher",
    "Yellow-bellied Flycatcher", "Frigatebird", "Northern Fulmar", "Gadwall", "American Goldfinch",
    "European Goldfinch", "Boat-tailed Grackle", "Eared Grebe", "Horned Grebe", "Pied-billed Grebe",
    "Western Grebe", "Blue Grosbeak", "Evening Grosbeak", "Pine Grosbeak", "Rose-breasted Grosbeak",
    "Pigeon Guillemot", "California Gull", "Glaucous-winged Gull", "Heermann Gull", "Herring Gull",
    "Ivory Gull", "Ring-billed Gull", "Slaty-backed Gull", "Western Gull", "Anna Hummingbird",
    "Ruby-throated Hummingbird", "Rufous Hummingbird", "Green Violetear", "Long-tailed Jaeger",
    "Pomarine Jaeger", "Blue Jay", "Florida Jay", "Green Jay", "Dark-eyed Junco", "Tropical Kingbird",
    "Gray Kingbird", "Belted Kingfisher", "Green Kingfisher", "Pied Kingfisher", "Ringed Kingfisher",
    "White-breasted Kingfisher", "Red-legged Kittiwake", "Horned Lark", "Pacific Loon", "Mallard",
    "Western Meadowlark", "Hooded Merganser", "Red-breasted Merganser", "Mockingbird", "Nighthawk",
    "Clark Nutcracker", "White-breasted Nuthatch", "Baltimore Oriole", "Hooded Oriole", "Orchard Oriole",
    "Scott Oriole", "Ovenbird", "Brown Pelican", "White Pelican", "Western Wood-Pewee", "Sayornis",
    "American Pipit", "Whip-poor-Will", "Horned Puffin", "Common Raven", "White-necked Raven",
    "American Redstart", "Geococcyx", "Loggerhead Shrike", "Great Grey Shrike", "Baird Sparrow",
    "Black-throated Sparrow", "Brewer Sparrow", "Chipping Sparrow", "Clay-colored Sparrow", "House Sparrow",
    "Field Sparrow", "Fox Sparrow", "Grasshopper Sparrow", "Harris Sparrow", "Henslow Sparrow",
    "Le Conte Sparrow", "Lincoln Sparrow", "Nelson Sharp-tailed Sparrow", "Savannah Sparrow",
    "Seaside Sparrow", "Song Sparrow", "Tree Sparrow", "Vesper Sparrow", "White-crowned Sparrow",
    "White-throated Sparrow", "Cape Glossy Starling", "Bank Swallow", "Barn Swallow", "Cliff Swallow",
    "Tree Swallow", "Scarlet Tanager", "Summer Tanager", "Artic Tern", "Black Tern", "Caspian Tern",
    "Common Tern", "Elegant Tern", "Forsters Tern", "Least Tern", "Green-tailed Towhee", "Brown Thrasher",
    "Sage Thrasher", "Black-capped Vireo", "Blue-headed Vireo", "Philadelphia Vireo", "Red-eyed Vireo",
    "Warbling Vireo", "White-eyed Vireo", "Yellow-throated Vireo", "Bay-breasted Warbler",
    "Black-and-white Warbler", "Black-throated Blue Warbler", "Blue-winged Warbler", "Canada Warbler",
    "Cape May Warbler", "Cerulean Warbler", "Chestnut-sided Warbler", "Golden-winged Warbler",
    "Hooded Warbler", "Kentucky Warbler", "Magnolia Warbler", "Mourning Warbler", "Myrtle Warbler",
    "Nashville Warbler", "Orange-crowned Warbler", "Palm Warbler", "Pine Warbler", "Prairie Warbler",
    "Prothonotary Warbler", "Swainson Warbler", "Tennessee Warbler", "Wilson Warbler",
    "Worm-eating Warbler", "Yellow Warbler", "Northern Waterthrush", "Louisiana Waterthrush",
    "Bohemian Waxwing", "Cedar Waxwing", "American Three-toed Woodpecker", "Pileated Woodpecker",
    "Red-bellied Woodpecker", "Red-cockaded Woodpecker", "Red-headed Woodpecker", "Downy Woodpecker",
    "Bewick Wren", "Cactus Wren", "Carolina Wren", "House Wren", "Marsh Wren", "Rock Wren", "Winter Wren",
    "Common Yellowthroat",
)  # fmt: skip

IMAGES_TGZ = "CUB_200_2011.tgz"
SEGMENTATIONS_TGZ = "segmentations.tgz"

SPEC = DatasetSpec(
    key="cub_200",
    name="CUB-200",
    domain="Agriculture and Biology",
    classes=CLASSES,
    sources=(
        Source(
            IMAGES_TGZ,
            "http",
            url="https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
            md5="97eceeb196236b17998738112f37df78",
        ),
        Source(
            SEGMENTATIONS_TGZ,
            "http",
            url="https://data.caltech.edu/records/w9d68-gec53/files/segmentations.tgz",
            md5="4d47ba1228eae64f2fa547c47bc65255",
        ),
    ),
    expected_test=5794,
    expected_train=5994,  # train_test_split.txt == 1
    image_format="jpeg",  # copied as they are; the few grey JPEGs become PNG
    image_hw=(375, 500),  # the longest side is at most 500 px (landscape 500x375 is typical)
    max_image_hw=(500, 500),
    mess_key="cub_200_sem_seg_test",
    channels="RGB",
    train_split="official",
    sensor="Visible Spectrum",
    segment_size="Medium",
    num_classes_label="201 (Many)",
    class_similarity="High",
    vocabulary="Domain Specific",
    task_description="Bird Species",
    citation="Wah et al., The Caltech-UCSD Birds-200-2011 Dataset, CNS-TR-2011-001",
    notes=("Images copied unchanged (MESS re-encodes them as JPEG); grayscale images converted to RGB PNG.",),
)


def _read_table(path: Path) -> dict[int, str]:
    """'<id> <value>' per line (images.txt, train_test_split.txt, classes.txt)."""
    if not path.exists():
        raise PrepareError(f"{path}: missing from {IMAGES_TGZ}")
    table: dict[int, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise PrepareError(f"{path}:{n}: malformed line {line!r}")
        table[int(parts[0])] = parts[1].strip()
    return table


def _class_of(rel: str, where: Path) -> int:
    folder = rel.split("/", 1)[0]
    prefix = folder.split(".", 1)[0]
    if not prefix.isdigit() or not 1 <= int(prefix) <= 200:
        raise PrepareError(f"{where}: image path {rel!r} does not start with a class folder NNN.Name")
    return int(prefix)


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """Threshold each soft mask at 128 and write the species id on the bird pixels."""
    counts = {"test": 0, "train": 0}
    with scratch_dir(out_dir, SPEC.key) as scratch:
        extract(raw_dir / IMAGES_TGZ, scratch / "img")
        extract(raw_dir / SEGMENTATIONS_TGZ, scratch / "seg")
        root = scratch / "img" / "CUB_200_2011"
        seg_root = scratch / "seg" / "segmentations"
        if not seg_root.is_dir():
            raise PrepareError(f"{raw_dir / SEGMENTATIONS_TGZ}: no segmentations/ folder inside")
        classes = _read_table(root / "classes.txt")
        if len(classes) != 200:
            raise PrepareError(f"{root / 'classes.txt'}: {len(classes)} classes, expected 200")
        images = _read_table(root / "images.txt")
        split = _read_table(root / "train_test_split.txt")
        for image_id, rel in sorted(images.items()):
            if split.get(image_id) not in ("0", "1"):
                raise PrepareError(f"{root / 'train_test_split.txt'}: no 0/1 entry for image id {image_id}")
            name = "train" if split[image_id] == "1" else "test"
            cls = _class_of(rel, root / "images.txt")
            stem = Path(rel).stem
            seg_path = seg_root / Path(rel).with_suffix(".png")
            soft = load_image(seg_path, "L")
            label = ((soft > 128) * cls).astype(np.uint8)
            # RGB JPEGs are copied unchanged; grayscale/CMYK ones become RGB PNGs
            hw = put_image(
                root / "images" / rel, out_dir / name / "images", stem, copy_suffixes=(".jpg", ".jpeg")
            )
            if label.shape != hw:
                raise PrepareError(f"{seg_path}: size {label.shape} differs from its image {hw}")
            save_label(out_dir / name / "labels" / f"{stem}.png", label, len(CLASSES))
            counts[name] += 1
    return {"split_protocol": "train_test_split.txt (1 train / 0 test)", "images": counts}


# --------------------------------------------------------------------------------------- miniature
def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """CUB_200_2011.tgz (images + txt tables + attributes.txt) and segmentations.tgz (soft PNG masks).

    Five images of classes 1, 17, 200 (one grayscale JPEG), an ellipse-shaped soft bird mask each.
    """
    rng = np.random.default_rng(seed)
    raw_dir = Path(raw_dir)
    folders = {i: f"{i:03d}." + CLASSES[i].replace(" ", "_") for i in range(1, 201)}
    picks = [(1, 0), (1, 1), (17, 0), (200, 1), (200, 0)]  # (class, is_training)
    images_txt, split_txt, labels_txt = [], [], []
    images, segmentations = {}, {}
    for image_id, (cls, is_train) in enumerate(picks, 1):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        yy, xx = np.mgrid[:h, :w]
        ell = ((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 2) / (w / 3)) ** 2
        soft = np.clip((1.2 - ell) * 255, 0, 255).astype(np.uint8)  # soft edge around 128
        bird = (soft[..., None] > 128) * (cls % 150)
        image = (rng.integers(0, 80, size=(h, w, 3)) + bird).astype(np.uint8)
        if image_id == 4:
            image = image[..., 0]  # CUB has a few grayscale JPEGs
        rel = f"{folders[cls]}/{folders[cls].split('.', 1)[1]}_{image_id:04d}_{100000 + image_id}.jpg"
        images[f"CUB_200_2011/images/{rel}"] = encode(image, "JPEG", quality=95)
        segmentations[f"segmentations/{rel[:-4]}.png"] = encode(soft, "PNG")
        images_txt.append(f"{image_id} {rel}")
        split_txt.append(f"{image_id} {is_train}")
        labels_txt.append(f"{image_id} {cls}")
    classes_txt = [f"{i} {folders[i]}" for i in range(1, 201)]
    for name, lines in (
        ("images.txt", images_txt),
        ("train_test_split.txt", split_txt),
        ("classes.txt", classes_txt),
        ("image_class_labels.txt", labels_txt),
    ):
        images[f"CUB_200_2011/{name}"] = ("\n".join(lines) + "\n").encode()
    images["attributes.txt"] = b"1 has_bill_shape::curved_(up_or_down)\n"
    write_tar_gz(raw_dir / IMAGES_TGZ, images)
    write_tar_gz(raw_dir / SEGMENTATIONS_TGZ, segmentations)
    mark_miniature(raw_dir)
