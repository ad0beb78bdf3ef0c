"""Split one COCO file into train / val (/ test) files by image, reproducibly (``gfldet data split``).

Images are shuffled with ``seed`` (Python's ``random.Random``, stable across platforms and versions); each split
other than the first takes ``fraction x images`` of them rounded half up (at least one), the first split takes
the rest. Every annotation goes with its image; each output file keeps every category and the
input's other top-level keys (``info``, ``licenses``), so the splits share class ids and evaluate alike.
"""
from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from gfldet.data.annotations import as_int, load_coco_json
from gfldet.data.problems import DataError

__all__ = ["SplitSummary", "split_coco"]


@dataclass
class SplitSummary:
    """What one output file holds: ``boxes_per_category`` maps category id -> annotations (crowd included)."""

    name: str
    path: Path
    images: int
    annotations: int
    boxes_per_category: Counter


def _split_sizes(num_images: int, fractions: dict[str, float], source: Path) -> dict[str, int]:
    """Images per split: fraction x images rounded half up, at least 1; the first split the rest."""
    first, *others = fractions
    if not 0 < sum(fractions[name] for name in others) < 1 or any(fractions[name] <= 0 for name in others):
        raise DataError(f"split fractions {dict((name, fractions[name]) for name in others)}: each must be > 0 and "
                        f"together below 1; the {first} split takes the rest")
    sizes = {name: max(math.floor(fractions[name] * num_images + 0.5), 1) for name in others}
    sizes = {first: num_images - sum(sizes.values()), **sizes}
    if sizes[first] < 1:
        raise DataError(f"{source}: {num_images} image(s) cannot make {len(sizes)} splits with "
                        f"{', '.join(f'{name} {size}' for name, size in sizes.items())}: lower the fractions")
    return sizes


def split_coco(ann_file: str | Path, out_dir: str | Path, *, fractions: dict[str, float],
               seed: int = 0) -> list[SplitSummary]:
    """Write ``out_dir/<name>.json`` for each split of ``fractions`` (``{"train": rest, "val": 0.2, ...}``: the
    first entry's value is ignored, it takes what the others leave). Refuses to overwrite an existing file (the
    input may live in ``out_dir``). Annotations whose image is not in the file are left out and not counted."""
    source, out_dir = Path(ann_file), Path(out_dir)
    data = load_coco_json(source, hint="")
    targets = {name: out_dir / f"{name}.json" for name in fractions}
    existing = [str(path) for path in targets.values() if path.exists()]
    if existing:
        raise DataError(f"{', '.join(existing)} already exist(s): choose another --out, or delete them first")
    images = list(data["images"])
    sizes = _split_sizes(len(images), fractions, source)  # checked before anything is written
    random.Random(seed).shuffle(images)
    annotations_of: dict[int, list[dict]] = {}
    for annotation in data.get("annotations", []):  # ids as training reads them: 12, 12.0 and "12" are one id
        image_id = as_int(annotation["image_id"])
        if image_id is not None:  # other ids match no image (``data check`` reports them)
            annotations_of.setdefault(image_id, []).append(annotation)
    rest = {key: value for key, value in data.items() if key not in ("images", "annotations")}
    summaries, start = [], 0
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, size in sizes.items():
        chosen = sorted(images[start:start + size], key=lambda image: as_int(image["id"]))
        start += size
        anns = [a for image in chosen for a in annotations_of.get(as_int(image["id"]), [])]
        targets[name].write_text(json.dumps({**rest, "images": chosen, "annotations": anns}))
        summaries.append(SplitSummary(name, targets[name], len(chosen), len(anns),
                                      Counter(as_int(a["category_id"]) for a in anns)))
    return summaries
