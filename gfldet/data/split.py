"""Split one COCO file into train / val (/ test) files by image, reproducibly (``gfldet data split``).

Each split other than the first takes ``fraction x images`` rounded half up (at least one), the first split the
rest. Which images: shuffled with ``seed`` (Python's ``random.Random``, stable across platforms and versions), then,
with ``stratify`` (the default), dealt rarest class first so that every class is spread over the splits in
proportion to their sizes (a class on two images of twenty still reaches a 25 % val split); without it, cut in
shuffled order. Every annotation goes with its image; each output file keeps every category and the input's
other top-level keys (``info``, ``licenses``), so the splits share class ids and evaluate alike.
"""
from __future__ import annotations

import itertools
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


def _stratified(images: list[dict], classes: list[set[int]], sizes: dict[str, int]) -> dict[str, list]:
    """``images`` (already shuffled; ``classes[i]``: the category ids on image i) dealt into splits of exactly
    ``sizes`` images: rarest class first (images without boxes last), each image to the split, among those with
    room, that still lacks most of the image's rarest class for its share (ties: the split with the most room left
    for its size)."""
    total = sum(sizes.values())
    images_with = Counter(c for image_classes in classes for c in image_classes)
    lacking = {name: {c: n * size / total for c, n in images_with.items()} for name, size in sizes.items()}
    room = dict(sizes)
    rarest = [min(image_classes, key=images_with.__getitem__, default=None) for image_classes in classes]
    dealt: dict[str, list] = {name: [] for name in sizes}
    for i in sorted(range(len(images)), key=lambda i: math.inf if rarest[i] is None else images_with[rarest[i]]):
        best = max((name for name in sizes if room[name]),
                   key=lambda name: (0.0 if rarest[i] is None else lacking[name][rarest[i]], room[name] / sizes[name]))
        dealt[best].append(images[i])
        room[best] -= 1
        for c in classes[i]:
            lacking[best][c] -= 1
    return dealt


def split_coco(ann_file: str | Path, out_dir: str | Path, *, fractions: dict[str, float], seed: int = 0,
               stratify: bool = True) -> list[SplitSummary]:
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
    if stratify:
        classes = [{as_int(a["category_id"]) for a in annotations_of.get(as_int(image["id"]), [])} for image in images]
        dealt = _stratified(images, classes, sizes)
    else:
        starts = dict(zip(sizes, itertools.accumulate([0, *sizes.values()])))
        dealt = {name: images[starts[name]:starts[name] + size] for name, size in sizes.items()}
    summaries = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in sizes:
        chosen = sorted(dealt[name], key=lambda image: as_int(image["id"]))
        anns = [a for image in chosen for a in annotations_of.get(as_int(image["id"]), [])]
        targets[name].write_text(json.dumps({**rest, "images": chosen, "annotations": anns}))
        summaries.append(SplitSummary(name, targets[name], len(chosen), len(anns),
                                      Counter(as_int(a["category_id"]) for a in anns)))
    return summaries
