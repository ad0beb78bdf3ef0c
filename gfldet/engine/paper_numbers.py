"""The GFL paper's COCO numbers (Li et al. 2020, arXiv 2006.04388 v1; model zoo figures from mmdetection).

Facts only: box AP on COCO minival (val2017) with ResNet-50 and the 1x schedule unless a row's note says
otherwise; FPS where the paper gives it (RTX 2080Ti, batch 1). ``gfldet report`` matches trained runs to these rows
through the ``ablation: {table, row}`` key of their configs (see ``configs/ablations/``).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PaperRow", "PaperTable", "PAPER_TABLES"]


@dataclass(frozen=True)
class PaperRow:
    """One result of the paper: ``label`` as the paper names it, ``ap`` in percent (the lower end where the
    source gives a range), optional ``fps`` and a free ``note`` (e.g. the test-dev number or the range)."""

    label: str
    ap: float
    fps: float | None = None
    note: str = ""


@dataclass(frozen=True)
class PaperTable:
    """A table of the paper: ``key`` as written in configs (``1a``), a ``title``, and rows by row id."""

    key: str
    title: str
    rows: dict[str, PaperRow]


def _table(key: str, title: str, rows: dict[str, PaperRow]) -> PaperTable:
    return PaperTable(key=key, title=title, rows=rows)


PAPER_TABLES: dict[str, PaperTable] = {t.key: t for t in (
    _table("1a", "Table 1(a): quality representation (FCOS / ATSS, R-50 1x)", {
        "fcos_none": PaperRow("FCOS, w/o quality branch", 37.8),
        "fcos_centerness_branch": PaperRow("FCOS, centerness branch", 38.5),
        "fcos_iou_branch": PaperRow("FCOS, IoU branch", 38.7),
        "fcos_centerness_guided": PaperRow("FCOS, centerness-guided", 37.9),
        "fcos_iou_guided": PaperRow("FCOS, IoU-guided", 38.2),
        "fcos_joint_qfl": PaperRow("FCOS, joint w/ QFL", 39.0),
        "atss_none": PaperRow("ATSS, w/o quality branch", 38.0),
        "atss_centerness_branch": PaperRow("ATSS, centerness branch", 39.2),
        "atss_iou_branch": PaperRow("ATSS, IoU branch", 39.6),
        "atss_centerness_guided": PaperRow("ATSS, centerness-guided", 38.2),
        "atss_iou_guided": PaperRow("ATSS, IoU-guided", 38.9),
        "atss_joint_qfl": PaperRow("ATSS, joint w/ QFL", 39.9),
    }),
    _table("1b", "Table 1(b): QFL on other detectors (R-50 1x)", {
        "fovea_focal": PaperRow("FoveaBox, focal loss", 36.4),
        "fovea_qfl": PaperRow("FoveaBox, QFL", 37.0),
        "retina_focal": PaperRow("RetinaNet, focal loss", 35.6),
        "retina_qfl": PaperRow("RetinaNet, QFL", 36.4),
        "ssd512_ce": PaperRow("SSD512, cross entropy", 29.4),
        "ssd512_qfl": PaperRow("SSD512, QFL", 30.2),
    }),
    _table("1c", "Table 1(c): QFL beta (ATSS + QFL)", {
        "beta_0": PaperRow("beta = 0", 37.6),
        "beta_1": PaperRow("beta = 1", 39.0),
        "beta_2": PaperRow("beta = 2", 39.9),
        "beta_2_5": PaperRow("beta = 2.5", 39.7),
        "beta_4": PaperRow("beta = 4", 38.2),
    }),
    _table("2a", "Table 2(a): box representation (FCOS / ATSS)", {
        "fcos_dirac": PaperRow("FCOS, Dirac delta", 38.5),
        "fcos_gaussian": PaperRow("FCOS, Gaussian", 38.6),
        "fcos_general": PaperRow("FCOS, general w/o DFL", 38.8),
        "fcos_general_dfl": PaperRow("FCOS, general w/ DFL", 39.0),
        "atss_dirac": PaperRow("ATSS, Dirac delta", 39.2),
        "atss_gaussian": PaperRow("ATSS, Gaussian", 39.3),
        "atss_general": PaperRow("ATSS, general w/o DFL", 39.3),
        "atss_general_dfl": PaperRow("ATSS, general w/ DFL", 39.5),
    }),
    _table("2b", "Table 2(b): number of bins n, Delta = 1 (ATSS + GFL)", {
        "n12": PaperRow("n = 12", 40.1),
        "n14": PaperRow("n = 14", 40.2),
        "n16": PaperRow("n = 16", 40.2),
        "n18": PaperRow("n = 18", 40.1),
    }),
    _table("2c", "Table 2(c): bin width Delta, n = 16 (ATSS + GFL)", {
        "delta_0_5": PaperRow("Delta = 0.5", 40.2),
        "delta_1": PaperRow("Delta = 1", 40.2),
        "delta_2": PaperRow("Delta = 2", 39.9),
        "delta_4": PaperRow("Delta = 4", 39.8),
    }),
    _table("3", "Table 3: QFL and DFL on ATSS", {
        "baseline": PaperRow("ATSS baseline", 39.2, fps=19.4),
        "qfl": PaperRow("+ QFL", 39.9, fps=19.4),
        "dfl": PaperRow("+ DFL", 39.5, fps=19.4),
        "qfl_dfl": PaperRow("+ QFL + DFL (GFL)", 40.2, fps=19.4),
    }),
    _table("zoo", "Model zoo (minival; test-dev in the notes)", {
        "gfl_r50_1x": PaperRow("GFL R-50 1x", 40.2, fps=19.4, note="test-dev 40.3"),
        "gfl_r50_ms2x": PaperRow("GFL R-50 ms-2x", 42.9, note="test-dev 43.1"),
        "gfl_r101_ms2x": PaperRow("GFL R-101 ms-2x", 44.7, note="44.7-44.9; test-dev 45.0"),
        "gfl_r101_dcn_ms2x": PaperRow("GFL R-101-DCN ms-2x", 47.1, note="47.1-47.2"),
        "gfl_x101_ms2x": PaperRow("GFL X-101-32x4d ms-2x", 45.7, note="45.7-45.9"),
        "gfl_x101_dcn_ms2x": PaperRow("GFL X-101-32x4d-DCN ms-2x", 48.1, note="48.1-48.3"),
        "atss_r50_1x": PaperRow("ATSS R-50 1x (mmdetection)", 39.4, note="3.7 GB per GPU"),
    }),
)}
