"""``gfldet data {voc2coco,split,synth,check,browse,stats}``: dataset tools (thin: parsing and printing only)."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import numpy as np

from gfldet.commands import add_opts_argument
from gfldet.config import ConfigError, load_config

DEFAULT_MODEL_CONFIG = Path(__file__).resolve().parents[2] / "configs/_base_/models/gfl_r50_fpn.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("voc2coco", help="convert Pascal-VOC XML annotations to COCO json")
    p.add_argument("--ann-dir", required=True, help="folder of VOC .xml files")
    p.add_argument("--img-dir", required=True, help="image folder; file_name in the json is relative to it")
    p.add_argument("--out", required=True, help="output folder for NAME.json (all.json without --split)")
    p.add_argument("--split", action="append", default=[], metavar="NAME=LIST_FILE",
                   help="a split name and its ImageSets list file; repeatable")
    p.add_argument("--classes", help="comma-separated class list (category ids 1..C in this order); "
                                     "default: sorted names found in the XML files")

    p = sub.add_parser("split", help="split one COCO json into train / val (/ test) json files by image")
    p.add_argument("ann_file", help="the COCO json to split")
    p.add_argument("--out", required=True, help="output folder for train.json, val.json (and test.json)")
    p.add_argument("--val", type=_fraction, default=0.2, help="share of the images for val.json (default 0.2; 0: "
                                                               "no val split)")
    p.add_argument("--test", type=_fraction, default=0.0, help="share for test.json (default 0: no test split)")
    p.add_argument("--seed", type=int, default=0, help="shuffling seed: the same seed gives the same split")
    p.add_argument("--no-stratify", dest="stratify", action="store_false",
                   help="cut the shuffled images in order (default: deal them rarest class first, so that every "
                        "class is spread over the splits in proportion to their sizes)")

    p = sub.add_parser("synth", help="write a deterministic synthetic COCO dataset of shapes")
    p.add_argument("--out", required=True, help="output folder (train.json, val.json, images/)")
    p.add_argument("--num-train", type=int, default=300)
    p.add_argument("--num-val", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="256x320", help="landscape image size HxW (a quarter are portrait)")

    p = sub.add_parser("check", help="validate every annotation and image of a config's splits")
    p.add_argument("config")
    p.add_argument("--split", action="append", choices=("train", "val", "test"),
                   help="split(s) to check (default: every split of the config; a missing annotation file is a "
                        "problem)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when any problem is found")
    add_opts_argument(p)

    p = sub.add_parser("browse", help="draw GT boxes after the split's transforms into image files")
    p.add_argument("config")
    p.add_argument("--split", default="train", choices=("train", "val", "test"))
    p.add_argument("--out", required=True)
    p.add_argument("--num", type=_positive_int, default=16)
    p.add_argument("--format", default="jpg", choices=("jpg", "png"))
    add_opts_argument(p)

    p = sub.add_parser("stats", help="box size/aspect histograms and reg_max clipping of ATSS targets")
    p.add_argument("config")
    p.add_argument("--split", default="train", choices=("train", "val", "test"))
    p.add_argument("--png", help="also save the histograms as a PNG here")
    p.add_argument("--max-images", type=_positive_int, help="only the first N images (faster on COCO)")
    p.add_argument("--strides", type=_strides, help="comma-separated prior strides in px, e.g. 8,16,32 "
                                                   "(default: from the model config)")
    p.add_argument("--reg-max", type=int, help="default: model.head.reg_max")
    add_opts_argument(p)


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def _fraction(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a share of the images in [0, 1), e.g. 0.2; got {text!r}")
    return value


def _strides(text: str) -> list[int]:
    """argparse type of --strides: comma-separated integers >= 1."""
    try:
        return [_positive_int(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1 (e.g. 8,16,32), got {text!r}")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return {"voc2coco": _voc2coco, "split": _split, "synth": _synth, "check": _check, "browse": _browse,
            "stats": _stats}[args.data_command](args)


def _voc2coco(args) -> int:
    from gfldet.data.voc import convert_voc

    splits = {}
    for item in args.split:
        if "=" not in item:
            raise ConfigError(f"--split {item!r}: expected NAME=LIST_FILE, e.g. train=ImageSets/Main/train.txt")
        name, path = item.split("=", 1)
        splits[name] = path
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    report = convert_voc(ann_dir=args.ann_dir, img_dir=args.img_dir, out_dir=args.out, splits=splits,
                         classes=classes)
    print(f"classes (category ids 1..{len(report['classes'])}): {', '.join(report['classes'])}")
    for name, info in report["splits"].items():
        per_class = ", ".join(f"{c}={info['per_class'].get(i + 1, 0)}" for i, c in enumerate(report["classes"]))
        print(f"{name}: {info['images']} images, {info['annotations']} boxes ({per_class}) -> {info['path']}")
    for line in report["skipped"].lines():
        print("skipped " + line)
    return 0


def _split(args) -> int:
    from gfldet.data.annotations import as_int, load_coco_json
    from gfldet.data.split import split_coco

    fractions = {"train": None, **{name: share for name, share in (("val", args.val), ("test", args.test)) if share}}
    if len(fractions) == 1:
        raise ConfigError("--val and --test are both 0: nothing to split off (e.g. --val 0.2)")
    summaries = split_coco(args.ann_file, args.out, fractions=fractions, seed=args.seed, stratify=args.stratify)
    names = {as_int(c["id"]): c["name"] for c in load_coco_json(summaries[0].path)["categories"]}
    for summary in summaries:
        per_class = ", ".join(f"{name}={summary.boxes_per_category.get(cat_id, 0)}" for cat_id, name in names.items())
        print(f"{summary.name}: {summary.images} images, {summary.annotations} boxes ({per_class}) -> {summary.path}")
        absent = [name for cat_id, name in names.items() if not summary.boxes_per_category.get(cat_id)]
        if absent and summary.name != "train":
            print(f"  note: no box of {', '.join(absent)} in {summary.name}: its AP will be missing (-1); try "
                  f"another --seed or a larger share")
    return 0


def _synth(args) -> int:
    from gfldet.data.synthetic import SynthSpec, generate_synthetic

    match = re.fullmatch(r"(\d+)x(\d+)", args.size)
    if not match or min(int(match[1]), int(match[2])) < 64:
        raise ConfigError(f"--size {args.size!r}: expected HxW with both sides >= 64, e.g. 256x320")
    if args.num_train < 1 or args.num_val < 1:
        raise ConfigError("--num-train and --num-val must be >= 1")
    spec = SynthSpec(num_train=args.num_train, num_val=args.num_val, height=int(match[1]), width=int(match[2]),
                     seed=args.seed)
    for split, path in generate_synthetic(spec, args.out).items():
        print(f"{split}: {path}")
    return 0


def _load_data_config(args):
    """The config of ``args.config`` with ``--opts``; a ConfigError when it has no ``data`` section (e.g. a model
    base file or an annotation json given as CONFIG)."""
    cfg = load_config(args.config, args.opts)
    if not isinstance(cfg.get("data"), dict):
        raise ConfigError(f"{args.config} has no data section: give an experiment config (one that inherits "
                          f"configs/_base_/datasets/..., e.g. configs/bccd/gfl_r18_fpn_bccd.yaml)")
    return cfg


def _check(args) -> int:
    from gfldet.data.builder import check_data_section
    from gfldet.data.check import check_split
    from gfldet.data.problems import DataError
    from gfldet.engine.launch import check_sections

    cfg = _load_data_config(args)
    check_sections(cfg)
    known = check_data_section(cfg.data)
    unknown = [split for split in args.split or () if split not in known]
    if unknown:
        raise ConfigError(f"{args.config}: has no data.{unknown[0]} section to check (it has: {', '.join(known)})")
    splits = args.split or known
    problems = 0
    for split in splits:
        section = cfg.data[split]
        try:
            report = check_split(split, section.get("ann_file", ""), section.get("img_dir", ""),
                                 num_threads=int(cfg.data.num_workers))
        except DataError as err:   # a missing or unreadable annotation file: the split cannot be checked
            print(f"[{split}] {section.get('ann_file')}\n  problems found: 1\n    {err}")
            problems += 1
            continue
        print("\n".join(report.lines()))
        problems += report.num_problems
    print(f"total problems: {problems} (policies: on_bad_image={cfg.data.on_bad_image}, "
          f"on_bad_annotation={cfg.data.on_bad_annotation})")
    return 1 if args.strict and problems else 0


def _browse(args) -> int:
    from gfldet.data import build_dataset
    from gfldet.data.browse import browse

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out} exists and is not a directory; give a folder for the images")
    cfg = _load_data_config(args)
    dataset = build_dataset(cfg.data, args.split)
    paths, skipped = browse(dataset, args.out, num=args.num, ext=f".{args.format}")
    print(f"wrote {len(paths)} images to {args.out}")
    for line in skipped.lines():
        print("skipped " + line)
    return 0


def _backbone_strides(backbone_cfg) -> list[int]:
    """Strides (px) of the configured backbone's outputs, from the backbone itself (ResNet or timm), built with
    random weights (nothing read or downloaded)."""
    import copy

    from gfldet.config import build_from_cfg
    from gfldet.models import BACKBONES

    backbone_cfg = copy.deepcopy(backbone_cfg)
    backbone_cfg["pretrained"] = False
    return list(build_from_cfg(backbone_cfg, BACKBONES).strides)


def _has_gfl_targets(model) -> bool:
    """An FPN model whose head regresses distances over bins {0..reg_max} of ATSS positives (GFL, its ablations)."""
    head = model.head
    return ("num_outs" in model.neck and "reg_max" in head and "octave_base_scale" in head
            and (head.get("assigner") or {}).get("type") == "atss")


def _model_settings(cfg, args) -> tuple[list[int], int, float, int]:
    """(strides, reg_max, octave_base_scale, atss topk) from the config's model section, or from the default
    GFL model config when the config has none; --strides / --reg-max override."""
    model = cfg.get("model")
    if not model or "neck" not in model or "head" not in model:
        print(f"(no model section in {args.config}: using {DEFAULT_MODEL_CONFIG.name})")
        model = load_config(DEFAULT_MODEL_CONFIG).model
    elif not _has_gfl_targets(model):
        print(f"(model.head.type {model.head.get('type')} of {args.config} has no ATSS distance targets over bins: "
              f"using the GFL settings of {DEFAULT_MODEL_CONFIG.name}; the box histograms do not depend on it)")
        model = load_config(DEFAULT_MODEL_CONFIG).model
    if args.strides:
        strides = args.strides
    else:
        first = _backbone_strides(model.backbone)[0]  # FPN levels double from the first backbone output
        strides = [first * 2 ** level for level in range(int(model.neck.num_outs))]
    reg_max = args.reg_max if args.reg_max is not None else int(model.head.reg_max)
    return strides, reg_max, float(model.head.octave_base_scale), int(model.head.assigner.topk)


def _stats(args) -> int:
    from gfldet.data import build_dataset
    from gfldet.data.stats import (ASPECT_EDGES, REG_MAX_CANDIDATES, SIZE_EDGES, collect_box_stats,
                                   save_histograms, text_histogram)

    cfg = _load_data_config(args)
    strides, reg_max, octave_base_scale, topk = _model_settings(cfg, args)
    dataset = build_dataset(cfg.data, args.split)
    stats = collect_box_stats(dataset, strides=strides, octave_base_scale=octave_base_scale, topk=topk,
                              max_images=args.max_images)
    print(f"{dataset.ann_file}: {len(stats.widths)} boxes at training scale; strides {strides}")
    print("\n".join(text_histogram(np.sqrt(stats.widths * stats.heights), SIZE_EDGES, "box size sqrt(w*h), px")))
    print("\n".join(text_histogram(stats.widths / stats.heights, ASPECT_EDGES, "aspect w/h")))
    print(f"ATSS positives: {len(stats.distances)} priors; GTs without any positive: "
          f"{stats.num_gts_without_positive}")
    for candidate in sorted(set(REG_MAX_CANDIDATES) | {reg_max}):
        sides, priors = stats.clip_share(candidate)
        mark = "  <- model.head.reg_max" if candidate == reg_max else ""
        print(f"  reg_max {candidate:>3}: {100 * sides:6.2f}% of target distances clipped, "
              f"{100 * priors:6.2f}% of positives have a clipped side{mark}")
    if args.png:
        save_histograms(stats, args.png, reg_max=reg_max)
        print(f"histograms saved to {args.png}")
    return 0
