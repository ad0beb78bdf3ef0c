"""Import mmdetection 3.3 on top of ``mmcv-lite`` for parity tests.

``mmcv-lite`` ships no compiled ops, and ``mmcv.ops`` (imported by mmdetection at module level) asserts that
every kernel exists in ``mmcv._ext``. A stub ``mmcv._ext`` whose attributes are placeholders lets the pure
PyTorch parts (assigners, losses, dense heads) import; calling a placeholder raises.

Usage in a test module::

    from tests.mmdet_compat import import_mmdet
    mmdet = import_mmdet()            # pytest.skip(...) when mmdetection is not installed
    from mmdet.models.task_modules.assigners import ATSSAssigner
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types

import pytest

_INSTALL_HINT = "bash scripts/install_parity_deps.sh (mmengine, mmcv-lite 2.1.0, mmdet 3.3.0 and its runtime deps)"


class _MissingKernels(types.ModuleType):
    """Stand-in for the compiled ``mmcv._ext``: any attribute is a function that raises when called."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise NotImplementedError(f"mmcv._ext.{name} is a stub: mmcv-lite has no compiled ops")

        return missing


def install_mmcv_ext_stub() -> None:
    """Register the stub ``mmcv._ext`` unless a real one is importable."""
    if "mmcv._ext" in sys.modules:
        return
    try:
        importlib.import_module("mmcv._ext")
    except ImportError:
        stub = _MissingKernels("mmcv._ext")
        stub.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", loader=None)
        sys.modules["mmcv._ext"] = stub


def import_mmdet() -> types.ModuleType:
    """Import mmdetection with the stub in place; skip the calling test (module) when it is not installed."""
    pytest.importorskip("mmcv", reason=f"mmdetection parity needs: {_INSTALL_HINT}")
    install_mmcv_ext_stub()
    mmdet = pytest.importorskip("mmdet", reason=f"mmdetection parity needs: {_INSTALL_HINT}")
    importlib.import_module("mmdet.models")  # registers modules; fails loudly if the stub is not enough
    return mmdet
