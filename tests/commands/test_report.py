"""gfldet report on fabricated work dirs: row matching, differences, missing / not-evaluated runs, errors."""
from __future__ import annotations

import csv
import json

import pytest
import yaml

from gfldet.commands import report as report_command
from gfldet.engine.report import ReportError, collect_rows, read_run, write_report


def make_run(root, name, table, row, ap=None, fps=None, ap_l=0.52):
    work_dir = root / name
    work_dir.mkdir()
    ablation = [{"table": t, "row": r} for t, r in row] if table is None else {"table": table, "row": row}
    (work_dir / "config.yaml").write_text(yaml.safe_dump({"model": {}, "ablation": ablation}))
    if ap is not None:
        metrics = {"bbox_mAP": ap, "bbox_mAP_50": 0.58, "bbox_mAP_75": 0.43, "bbox_mAP_s": 0.23,
                   "bbox_mAP_m": 0.44, "bbox_mAP_l": ap_l, "per_class": {}}
        (work_dir / "metrics.json").write_text(json.dumps(metrics))
    if fps is not None:  # as `gfldet benchmark --json WORK_DIR/benchmark.json` writes it
        (work_dir / "benchmark.json").write_text(json.dumps({"images_per_s": fps, "mode": "infer"}))
    return work_dir


def test_rows_are_matched_and_differences_computed(tmp_path):
    runs = [*read_run(make_run(tmp_path, "qfl", "3", "qfl", ap=0.401, fps=20.5)),
            *read_run(make_run(tmp_path, "base", "3", "baseline", ap=0.385))]
    report = collect_rows(runs)
    assert list(report) == ["3"]
    lines = {line.row: line for line in report["3"]}
    assert [line.row for line in report["3"]] == ["baseline", "qfl", "dfl", "qfl_dfl"]  # paper order
    assert lines["qfl"].difference == pytest.approx(40.1 - 39.9)
    assert lines["baseline"].difference == pytest.approx(38.5 - 39.2)
    assert lines["qfl"].run.fps == 20.5 and lines["baseline"].run.fps is None
    assert lines["dfl"].status == "missing" and lines["dfl"].difference is None


def test_markdown_and_csv_show_missing_and_not_evaluated(tmp_path):
    make_run(tmp_path, "n14", "2b", "n14", ap=0.2)
    make_run(tmp_path, "n16", "2b", "n16")  # trained, never evaluated
    out = tmp_path / "out"
    markdown = write_report([tmp_path / "n14", tmp_path / "n16"], out)
    assert "Table 2(b)" in markdown and "Table 1(a)" not in markdown
    rows = {r["row"]: r for r in csv.DictReader(open(out / "table_2b.csv"))}
    assert rows["n14"]["AP"] == "20.0" and rows["n14"]["paper AP"] == "40.2" and rows["n14"]["diff"] == "-20.2"
    assert rows["n14"]["AP50"] == "58.0"
    assert rows["n16"]["status"] == "not evaluated" and rows["n16"]["diff"] == "-"
    assert rows["n12"]["status"] == "missing" and rows["n12"]["AP"] == "missing"
    assert (out / "report.md").read_text() == markdown and (out / "table_2b.md").is_file()


def test_cocos_no_data_value_is_a_dash_not_minus_100(tmp_path):
    make_run(tmp_path, "n14", "2b", "n14", ap=0.2, ap_l=-1.0)  # a val set without large objects
    make_run(tmp_path, "n16", "2b", "n16", ap=-1.0, ap_l=-1.0)  # no ground truth at all
    out = tmp_path / "out"
    markdown = write_report([tmp_path / "n14", tmp_path / "n16"], out)
    assert "-100" not in markdown and "| n14 | n = 14 |" in markdown
    rows = {r["row"]: r for r in csv.DictReader(open(out / "table_2b.csv"))}
    assert rows["n14"]["APl"] == "-" and rows["n14"]["AP"] == "20.0" and rows["n14"]["diff"] == "-20.2"
    assert rows["n16"]["AP"] == "-" and rows["n16"]["diff"] == "-" and rows["n16"]["status"] == "ok"
    line = next(line for line in collect_rows(read_run(tmp_path / "n16"))["2b"] if line.row == "n16")
    assert line.run.ap["APl"] is None and line.difference is None


def test_requested_tables_are_reported_even_without_runs(tmp_path):
    make_run(tmp_path, "b0", "1c", "beta_0", ap=0.3)
    report = collect_rows(read_run(tmp_path / "b0"), tables=["1c", "2c"])
    assert list(report) == ["1c", "2c"]
    assert all(line.status == "missing" for line in report["2c"])
    with pytest.raises(ReportError, match="unknown table"):
        collect_rows([], tables=["9z"])


def test_two_runs_of_one_row_are_both_listed(tmp_path):
    runs = [run for name, ap in (("a", 0.4), ("b", 0.41))
            for run in read_run(make_run(tmp_path, name, "2c", "delta_1", ap=ap))]
    lines = [line for line in collect_rows(runs)["2c"] if line.row == "delta_1"]
    assert [line.run.work_dir.name for line in lines] == ["a", "b"]


def test_bad_work_dirs_give_clear_errors(tmp_path):
    with pytest.raises(ReportError, match="no config.yaml"):
        read_run(tmp_path)
    with pytest.raises(ReportError, match="did you mean 'atss_iou_branch'"):
        read_run(make_run(tmp_path, "typo", "1a", "atss_iou_brnch"))
    bad = make_run(tmp_path, "bad", "3", "dfl")
    (bad / "metrics.json").write_text(json.dumps({"bbox_mAP": 0.3}))
    with pytest.raises(ReportError, match="bbox_mAP_50"):
        read_run(bad)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.yaml").write_text("model: {}\n")
    with pytest.raises(ReportError, match="ablation"):
        read_run(plain)


def test_command_prints_and_writes(tmp_path, capsys):
    import argparse

    make_run(tmp_path, "g", "3", "qfl_dfl", ap=0.402)
    parser = argparse.ArgumentParser()
    report_command.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "g"), "--out", str(tmp_path / "out"), "--tables", "3,2b"])
    assert report_command.run(args) == 0
    printed = capsys.readouterr().out
    assert "| qfl_dfl |" in printed and "+0.0" in printed and "Table 2(b)" in printed
    assert (tmp_path / "out" / "table_3.csv").is_file()


def test_one_run_can_fill_rows_of_several_tables(tmp_path):
    make_run(tmp_path, "gfl", None, [("3", "qfl_dfl"), ("2b", "n16")], ap=0.401)
    report = collect_rows(read_run(tmp_path / "gfl"))
    assert list(report) == ["2b", "3"]
    assert [line.row for line in report["2b"] if line.status == "ok"] == ["n16"]
    assert [line.row for line in report["3"] if line.status == "ok"] == ["qfl_dfl"]


def test_configs_for_tables_selects_by_ablation_rows():
    from pathlib import Path

    from gfldet.engine.report import configs_for_tables

    root = Path(__file__).parents[2] / "configs/ablations"
    paths = sorted(root.glob("*.yaml"))
    names = {p.stem for p in configs_for_tables(paths, ["2b"])}
    assert names == {"table2b_n12", "table2b_n14", "table2b_n18", "table3_qfl_dfl"}
    assert len(configs_for_tables(paths)) == len(paths)
    with pytest.raises(ReportError, match="unknown table"):
        configs_for_tables(paths, ["7"])
