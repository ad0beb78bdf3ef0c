import copy
import pickle
import re
import textwrap
from pathlib import Path
from typing import Optional

import pytest
import yaml

from gfldet.cli import main
from gfldet.config import (Config, ConfigError, annotated_yaml, apply_overrides, build_from_cfg, check_keys,
                           dump_config, load_config)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def tree(tmp_path):
    write(tmp_path / "_base_/model.yaml", """
        model:
          num_classes: 80
          head:
            type: gfl
            reg_max: 16
            loss: {beta: 2.0, weight: 1.0}
        """)
    write(tmp_path / "_base_/data.yaml", """
        data:
          batch_size: 2
          train: {ann_file: a.json, img_dir: imgs}
        """)
    return tmp_path


def test_inheritance_list_relative_paths_and_deep_merge(tree):
    path = write(tree / "exp/child.yaml", """
        _base_: [../_base_/model.yaml, ../_base_/data.yaml]
        model:
          head:
            reg_max: 12
        data:
          batch_size: 4
        """)
    cfg = load_config(path)
    assert cfg.model.num_classes == 80
    assert cfg.model.head.reg_max == 12
    assert cfg.model.head.type == "gfl"  # merged, not replaced
    assert cfg.model.head.loss.beta == 2.0
    assert cfg.data.batch_size == 4 and cfg.data.train.img_dir == "imgs"
    assert "_base_" not in cfg


def test_single_base_string_and_chained_bases(tree):
    mid = write(tree / "mid.yaml", "_base_: _base_/model.yaml\nmodel: {num_classes: 3}\n")
    leaf = write(tree / "sub/leaf.yaml", "_base_: ../mid.yaml\nmodel: {head: {reg_max: 8}}\n")
    cfg = load_config(leaf)
    assert (cfg.model.num_classes, cfg.model.head.reg_max, cfg.model.head.loss.weight) == (3, 8, 1.0)
    assert load_config(mid).model.head.reg_max == 16


def test_replace_marker_replaces_instead_of_merging(tree):
    path = write(tree / "child.yaml", """
        _base_: _base_/model.yaml
        model:
          head:
            _replace_: true
            type: atss
        """)
    cfg = load_config(path)
    assert dict(cfg.model.head) == {"type": "atss"}


def test_replace_markers_inside_a_replaced_section_are_dropped(tree):
    path = write(tree / "child.yaml", """
        _base_: _base_/model.yaml
        model:
          head:
            _replace_: true
            type: atss
            loss: {_replace_: true, beta: 2.0}
          extra: {_replace_: true, inner: {_replace_: true, y: 2}}
        """)
    cfg = load_config(path)
    assert dict(cfg.model.head.loss) == {"beta": 2.0}
    assert cfg.model.extra.to_dict() == {"inner": {"y": 2}}


def test_overrides_are_typed_as_yaml_and_checked(tree):
    cfg = load_config(tree / "_base_/model.yaml", ["model.head.reg_max=14", "model.head.loss={beta: 1.5}",
                                                    "+model.extra=[1, 2]", "model.num_classes=null"])
    assert cfg.model.head.reg_max == 14 and isinstance(cfg.model.head.reg_max, int)
    assert dict(cfg.model.head.loss) == {"beta": 1.5}
    assert cfg.model.extra == [1, 2] and cfg.model.num_classes is None
    with pytest.raises(ConfigError, match=r"model\.head\.reg_mx.*did you mean 'reg_max'"):
        load_config(tree / "_base_/model.yaml", ["model.head.reg_mx=3"])
    with pytest.raises(ConfigError, match="expected 'key.sub=value'"):
        load_config(tree / "_base_/model.yaml", ["model.head.reg_max"])


def test_override_list_index(tree):
    cfg = Config({"a": {"steps": [8, 11]}})
    apply_overrides(cfg, ["a.steps.1=10"])
    assert cfg.a.steps == [8, 10]
    with pytest.raises(ConfigError, match="not a valid index"):
        apply_overrides(cfg, ["a.steps.5=1"])


def test_errors_name_file_and_line(tmp_path):
    bad = write(tmp_path / "bad.yaml", "model:\n  head: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+:\d+: invalid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    missing_base = write(tmp_path / "mb.yaml", "\n_base_: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"mb\.yaml:2: _base_ file not found: nope\.yaml"):
        load_config(missing_base)
    with pytest.raises(ConfigError, match="top level"):
        load_config(write(tmp_path / "list.yaml", "- 1\n- 2\n"))


def test_circular_base_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_where_tracks_the_file_that_last_set_a_key(tree):
    path = write(tree / "child.yaml", "_base_: _base_/model.yaml\n\nmodel:\n  head:\n    reg_max: 12\n")
    cfg = load_config(path, ["model.num_classes=3"])
    assert cfg.model.head.where("reg_max").endswith("child.yaml:5 (model.head.reg_max)")
    assert cfg.model.head.where("type").endswith("model.yaml:5 (model.head.type)")
    assert "override #1" in cfg.model.where("num_classes")


class Head:
    def __init__(self, *, in_channels: int, reg_max: int = 16, beta: float = 2.0, name: Optional[str] = None):
        self.in_channels, self.reg_max, self.beta, self.name = in_channels, reg_max, beta, name


REGISTRY = {"gfl": Head}


def test_build_from_cfg_builds_and_reports_typos_with_location(tmp_path):
    path = write(tmp_path / "m.yaml", "head:\n  type: gfl\n  reg_mx: 12\n")
    cfg = load_config(path)
    with pytest.raises(ConfigError, match=r"m\.yaml:3 \(head\.reg_mx\): unknown key 'reg_mx'.*did you mean 'reg_max'"):
        build_from_cfg(cfg.head, REGISTRY, in_channels=256)
    ok = build_from_cfg(Config({"type": "gfl", "reg_max": 12, "beta": 2}), REGISTRY, in_channels=256)
    assert (ok.in_channels, ok.reg_max, ok.beta) == (256, 12, 2)


def test_build_from_cfg_type_missing_args_and_basic_types():
    with pytest.raises(ConfigError, match="unknown type 'gfll'; did you mean 'gfl'"):
        build_from_cfg(Config({"type": "gfll"}), REGISTRY)
    with pytest.raises(ConfigError, match="needs a 'type' key"):
        build_from_cfg(Config({"reg_max": 3}), REGISTRY)
    with pytest.raises(ConfigError, match="missing required key.*in_channels"):
        build_from_cfg(Config({"type": "gfl"}), REGISTRY)
    with pytest.raises(ConfigError, match="'reg_max' must be an integer, got '16'"):
        build_from_cfg(Config({"type": "gfl", "reg_max": "16", "in_channels": 8}), REGISTRY)
    with pytest.raises(ConfigError, match="'reg_max' must be an integer, got True"):
        build_from_cfg(Config({"type": "gfl", "reg_max": True, "in_channels": 8}), REGISTRY)
    assert build_from_cfg(Config({"type": "gfl", "name": None, "in_channels": 8}), REGISTRY).name is None


def test_check_keys():
    cfg = Config({"data": {"batch_size": 2, "num_wokers": 2}})
    check_keys(cfg.data, ["batch_size", "num_workers", "num_wokers"])
    with pytest.raises(ConfigError, match=r"data\.num_wokers.*did you mean 'num_workers'"):
        check_keys(cfg.data, ["batch_size", "num_workers"], where="data")


def test_attribute_access_copy_pickle_and_dump(tree, tmp_path):
    cfg = load_config(tree / "_base_/model.yaml")
    with pytest.raises(AttributeError, match="did you mean 'num_classes'"):
        cfg.model.num_clases
    cfg.model.new_section = {"a": 1}
    assert isinstance(cfg.model.new_section, Config) and cfg.model.new_section.dotted("a") == "model.new_section.a"
    clone = copy.deepcopy(cfg)
    clone.model.head.reg_max = 3
    assert cfg.model.head.reg_max == 16
    assert clone.model.head.where("type") == cfg.model.head.where("type")
    restored = pickle.loads(pickle.dumps(cfg))
    assert restored == cfg and restored.model.head.where("type") == cfg.model.head.where("type")
    dump_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg


def test_mappings_inside_lists_are_configs_and_dump_as_plain_yaml(tmp_path):
    path = write(tmp_path / "t.yaml", """
        data:
          transforms:
            - {type: Resize, scale: [1333, 800]}
            - {type: HorizontalFlip, p: 0.5}
        """)
    cfg = load_config(path)
    first = cfg.data.transforms[0]
    assert isinstance(first, Config) and first.type == "Resize" and first.dotted("scale") == "data.transforms.0.scale"
    assert first.where("scale").endswith("t.yaml:4 (data.transforms.0.scale)")
    plain = cfg.to_dict()
    assert type(plain["data"]["transforms"][1]) is dict
    dump_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg



def test_typed_reads_name_file_line_key_and_what_was_expected(tmp_path):
    section = load_config(write(tmp_path / "x.yaml", """
        train:
          seed: abc
          lr: 1e-3
          clip: null
          amp: off
          milestones: 5
          ok: [1, 3]
        """)).train
    with pytest.raises(ConfigError, match=r"x\.yaml:3 \(train\.seed\): expected an integer >= 0, got 'abc'"):
        section.get_int("seed", low=0)
    assert section.get_float("lr", positive=True) == 1e-3  # YAML 1.1 reads 1e-3 as a string
    assert section.get_float("clip", positive=True, optional=True) is None
    with pytest.raises(ConfigError, match=r"x\.yaml:5 \(train\.clip\): expected a number in \[0, 1\], got null"):
        section.get_float("clip", low=0, high=1)
    with pytest.raises(ConfigError, match=r"x\.yaml:6 \(train\.amp\): expected one of off, fp16.*quote the value"):
        section.get_choice("amp", ("off", "fp16"))
    with pytest.raises(ConfigError, match=r"x\.yaml:7 \(train\.milestones\): expected a list of increasing integers"):
        section.get_ints("milestones", increasing=True)
    assert section.get_ints("ok", low=0, increasing=True) == [1, 3]
    with pytest.raises(ConfigError, match=r"x\.yaml:2 \(train\): train\.missing is missing: expected true or false"):
        section.get_bool("missing")


def test_build_from_cfg_checks_lists_of_numbers_and_lists_consumed_keys():
    def factory(*, sizes: list[int], lr: float = 0.1):
        return sizes

    with pytest.raises(ConfigError, match="'sizes' must be a list of integers, got 5"):
        build_from_cfg(Config({"type": "f", "sizes": 5}), {"f": factory})
    with pytest.raises(ConfigError, match=r"unknown key 'mult'.*did you mean 'mul'\? \(valid keys: type, mul, sizes"):
        build_from_cfg(Config({"type": "f", "sizes": [1], "mult": 2}), {"f": factory}, consumed=("mul",), lr=0.2)
    assert build_from_cfg(Config({"type": "f", "sizes": [1], "mul": 2}), {"f": factory}, consumed=("mul",)) == [1]


EXPERIMENT_CONFIGS = sorted(p for p in (Path(__file__).parents[1] / "configs").rglob("*.yaml")
                            if "_base_" not in p.parts)


@pytest.mark.parametrize("path", EXPERIMENT_CONFIGS, ids=lambda p: p.name)
def test_annotated_yaml_reads_back_as_the_merged_config(path):
    cfg = load_config(path)
    assert yaml.safe_load(annotated_yaml(cfg)) == cfg.to_dict()


def test_config_command_names_where_each_value_was_set(capsys):
    config = Path(__file__).parents[1] / "configs/gfl/gfl_r50_fpn_1x_coco.yaml"
    assert main(["config", str(config), "--opts", "train.accumulate=8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    base = config.parents[1] / "_base_/models/gfl_r50_fpn.yaml"
    line = next(n for n, text in enumerate(base.read_text().splitlines(), 1) if text.strip().startswith("reg_max:"))
    assert f"    reg_max: 16  # configs/_base_/models/gfl_r50_fpn.yaml:{line}" in [
        re.sub(r"# .*(configs/)", r"# \1", text) for text in lines]
    assert "  accumulate: 8  # override #1 'train.accumulate=8'" in lines
    assert main(["config", str(config), "--plain"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == load_config(config).to_dict()


def test_annotated_yaml_reads_back_tricky_keys_and_values_and_names_each_override(tree):
    overrides = ["+extra.1=a", "+extra.yes=b", "+extra.null=c", "+extra.text='on'", "+extra.nums=[1, .inf]",
                 "+extra.unicode=é", "+extra.empty={}", "+deep.inner.x=3", "model.head={type: h2}",
                 "+lists=[{a: 1}, {b: 2}]", "lists.0.a=5", "+extra.multi=[1,\n 2]"]
    path = write(tree / "exp.yaml", "_base_: [_base_/model.yaml, _base_/data.yaml]\n")
    cfg = load_config(path, overrides)
    text = annotated_yaml(cfg)
    assert yaml.safe_load(text) == cfg.to_dict()
    lines = text.splitlines()
    assert "deep:  # override #8 '+deep.inner.x=3'" in lines and "    x: 3  # override #8 '+deep.inner.x=3'" in lines
    assert "    type: h2  # override #9 'model.head={type: h2}'" in lines  # inside a section an override set whole
    assert any(line.startswith("lists: [{a: 5}, {b: 2}]  # override #10") and "item 0 set by override #11" in line
               for line in lines)
    assert "  multi: [1, 2]  # override #12 '+extra.multi=[1, 2]'" in lines  # the override's newline: one line
    with pytest.raises(ConfigError, match=r"an empty key in '\+a\.\.b'"):
        load_config(path, ["+a..b=2"])
