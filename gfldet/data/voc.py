"""Pascal-VOC XML -> COCO json conversion (``gfldet data voc2coco``).

Coordinate convention (as mmdetection's ``tools/dataset_converters/pascal_voc.py``): VOC boxes are 1-based pixel
indices ``xmin..xmax`` inclusive; all four coordinates are shifted by -1 to 0-based pixel edges and the COCO box is
``[xmin - 1, ymin - 1, xmax - xmin, ymax - ymin]``. ``difficult`` objects become ``iscrowd: 1`` (ignore regions,
as mmdetection's converter does). Categories are numbered 1..C in the order of the class list, which is the sorted
set of names found in all converted XML files unless given. ``file_name`` is relative to the image folder.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2

from gfldet.data.coco import IMAGE_SUFFIXES
from gfldet.data.problems import DataError, ProblemLog

__all__ = ["VocObject", "VocImage", "parse_voc_xml", "convert_voc"]


@dataclass
class VocObject:
    """One <object>: class name, difficult flag, VOC 1-based ``(xmin, ymin, xmax, ymax)``."""

    name: str
    difficult: bool
    xyxy: tuple[float, float, float, float]


@dataclass
class VocImage:
    """One annotation file: image path relative to the image folder, size in px, objects."""

    file_name: str
    width: int
    height: int
    objects: list[VocObject]


def _text(node: ET.Element, path: str, xml_path: Path) -> str:
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise DataError(f"{xml_path}: missing <{path}> element")
    return found.text.strip()


def _number(node: ET.Element, path: str, xml_path: Path) -> float:
    value = _text(node, path, xml_path)
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{xml_path}: <{path}> is {value!r}, expected a number") from None


def _dimension(size: ET.Element | None, key: str, xml_path: Path) -> int:
    """<size>/<key> in px; 0 when <size> is absent or the value is not finite (the image is then read)."""
    value = _number(size, key, xml_path) if size is not None else 0.0
    return int(value) if math.isfinite(value) else 0


def _image_file(xml_path: Path, stated: str | None, img_dir: Path) -> str:
    """The image path relative to ``img_dir``: the XML's <filename> if it exists, else ``<xml stem>.<ext>``."""
    if stated and (img_dir / stated).is_file():
        return stated
    for suffix in IMAGE_SUFFIXES:
        if (img_dir / (xml_path.stem + suffix)).is_file():
            return xml_path.stem + suffix
    return stated or xml_path.stem + ".jpg"   # left for `gfldet data check` to report as missing


def parse_voc_xml(xml_path: Path, img_dir: Path) -> VocImage:
    """One annotation file -> VocImage (boxes still VOC 1-based xyxy). DataError names the file and element."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        line, column = err.position
        raise DataError(f"{xml_path}:{line}:{column}: malformed XML ({err})") from None
    except OSError as err:
        raise DataError(f"cannot read {xml_path}: {err}") from None
    stated = root.findtext("filename")
    file_name = _image_file(xml_path, stated.strip() if stated else None, img_dir)
    size = root.find("size")
    width, height = (_dimension(size, key, xml_path) for key in ("width", "height"))
    if width <= 0 or height <= 0:   # some VOC exports write 0: read the image itself
        image = cv2.imread(str(img_dir / file_name))
        if image is None:
            raise DataError(f"{xml_path}: <size> is missing or 0 and {img_dir / file_name} cannot be read")
        height, width = image.shape[:2]
    objects = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{xml_path}: an <object> has no <bndbox>")
        xyxy = tuple(_number(box, k, xml_path) for k in ("xmin", "ymin", "xmax", "ymax"))
        difficult = obj.findtext("difficult", "0").strip() == "1"
        objects.append(VocObject(_text(obj, "name", xml_path), difficult, xyxy))
    return VocImage(file_name, width, height, objects)


def _read_split(list_file: Path) -> list[str]:
    if not list_file.is_file():
        raise DataError(f"split list not found: {list_file}")
    return [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]


def convert_voc(*, ann_dir: str | Path, img_dir: str | Path, out_dir: str | Path,
                splits: dict[str, str | Path] | None = None, classes: list[str] | None = None) -> dict:
    """Convert VOC XML files to ``out_dir/<split>.json`` (``all.json`` when ``splits`` is empty).

    Returns ``{"classes": [...], "splits": {name: {"images": n, "annotations": m, "path": str}},
    "skipped": ProblemLog}`` -- objects whose class is not in a given ``classes`` list, or whose box has a
    non-finite coordinate, are skipped and counted.
    """
    ann_dir, img_dir, out_dir = Path(ann_dir), Path(img_dir), Path(out_dir)
    if not ann_dir.is_dir():
        raise DataError(f"--ann-dir {ann_dir} is not a directory")
    if not img_dir.is_dir():
        raise DataError(f"--img-dir {img_dir} is not a directory")
    if splits:
        stems = {name: _read_split(Path(path)) for name, path in splits.items()}
    else:
        stems = {"all": sorted(p.stem for p in ann_dir.glob("*.xml"))}
        if not stems["all"]:
            raise DataError(f"no .xml files in {ann_dir}")
    parsed = {}
    for stem in sorted({s for names in stems.values() for s in names}):
        xml_path = ann_dir / f"{stem}.xml"
        if not xml_path.is_file():
            raise DataError(f"{xml_path} not found (listed in a split file)")
        parsed[stem] = parse_voc_xml(xml_path, img_dir)
    class_list = classes or sorted({o.name for image in parsed.values() for o in image.objects})
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped = ProblemLog(str(ann_dir))
    report = {"classes": class_list, "splits": {}, "skipped": skipped}
    for name, names in stems.items():
        coco = _to_coco([(stem, parsed[stem]) for stem in names], class_list, skipped, ann_dir)
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(coco, allow_nan=False))
        per_class = Counter(a["category_id"] for a in coco["annotations"])
        report["splits"][name] = {"images": len(coco["images"]), "annotations": len(coco["annotations"]),
                                  "path": str(path), "per_class": per_class}
    return report


def _to_coco(items: list[tuple[str, VocImage]], class_list: list[str], skipped: ProblemLog, ann_dir: Path) -> dict:
    category_of = {name: i + 1 for i, name in enumerate(class_list)}
    images, annotations = [], []
    for image_id, (stem, image) in enumerate(items, start=1):
        images.append({"id": image_id, "file_name": image.file_name, "width": image.width, "height": image.height})
        for obj in image.objects:
            if obj.name not in category_of:
                skipped.add("class not in --classes", f"{ann_dir / stem}.xml: object '{obj.name}'")
                continue
            if not all(math.isfinite(v) for v in obj.xyxy):
                skipped.add("non-finite box coordinate", f"{ann_dir / stem}.xml: object '{obj.name}' has "
                                                         f"<bndbox> {list(obj.xyxy)}")
                continue
            xmin, ymin, xmax, ymax = obj.xyxy
            w, h = xmax - xmin, ymax - ymin
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category_of[obj.name], "bbox": [xmin - 1, ymin - 1, w, h],
                                "area": w * h, "iscrowd": int(obj.difficult)})
    categories = [{"id": i, "name": name, "supercategory": "none"} for name, i in category_of.items()]
    return {"images": images, "annotations": annotations, "categories": categories}
