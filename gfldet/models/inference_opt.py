"""Inference-time rewrites of a detector that keep its outputs (up to float32 rounding).

``optimize_for_inference(model)`` puts the model in eval mode, stops gradients and folds every eval-mode BatchNorm
into the convolution that feeds it (``torch.nn.utils.fusion.fuse_conv_bn_eval``): ``W' = W * g / sqrt(v + eps)``,
``b' = (b - m) * g / sqrt(v + eps) + beta``. That removes one full pass over every backbone activation. By default
it also converts the weights to ``channels_last`` (NHWC; activations follow), which oneDNN and cuDNN convolutions
run faster; on AVX2 CPUs it runs the stride-1 3x3 convolutions of the neck and head on large maps on NNPACK's
Winograd kernels (``winograd_conv.py``); optionally it compiles backbone, neck and head with ``torch.compile``.
Measured effects: ``docs/benchmarks.md``.

The rewritten model is for inference only: the folded BatchNorms become ``nn.Identity`` (so the state dict loses
their keys; load checkpoints *before* optimising) and ``train()`` would no longer restore them.
Outputs differ from the original model's by float32 rounding only (relative ~1e-6 on the raw outputs, ~1e-5 with
the Winograd convolutions; a detection whose score sits within that margin of ``score_thr``, or two near-equal
scores, can flip in rare cases).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models import resnet as tv_resnet

from gfldet.models.backbones import ResNet
from gfldet.models.winograd_conv import swap_in_winograd_convs, winograd_pays_off

__all__ = ["fold_batchnorm", "optimize_for_inference"]

# Modules whose ``convK`` is always followed directly by ``bnK`` in forward (torchvision's blocks, our ResNet stem).
_NAMED_PAIR_TYPES = (tv_resnet.BasicBlock, tv_resnet.Bottleneck, ResNet)
_BATCHNORMS = (nn.BatchNorm2d,)


def _fold(parent: nn.Module, conv_name: str, bn_name: str) -> bool:
    conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
    # exact types only: subclasses (e.g. deformable convs, BatchNorm+activation) have other forward semantics
    if type(conv) is not nn.Conv2d or type(bn) not in _BATCHNORMS or not bn.track_running_stats:
        return False
    setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
    setattr(parent, bn_name, nn.Identity())
    return True


def fold_batchnorm(model: nn.Module) -> int:
    """Fold eval-mode BatchNorm2d layers into the Conv2d right before them, in place; returns how many.

    Recognised pairs: consecutive children of an ``nn.Sequential`` (e.g. a ResNet ``downsample``), and ``convK`` /
    ``bnK`` attributes of torchvision ResNet blocks and of :class:`gfldet.models.backbones.ResNet` (the stem).
    Other BatchNorms (e.g. timm's fused BatchNormAct2d) are left alone. ``model`` must be in eval mode.
    """
    if any(m.training for m in model.modules()):
        raise ValueError("fold_batchnorm: the model must be in eval mode (call model.eval() first); folded "
                         "BatchNorms cannot be trained")
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = [name for name, _ in module.named_children()]
            folded += sum(_fold(module, a, b) for a, b in zip(names, names[1:]))
        if isinstance(module, _NAMED_PAIR_TYPES):
            pairs = [(name, "bn" + name[4:]) for name, _ in module.named_children()
                     if name.startswith("conv") and hasattr(module, "bn" + name[4:])]
            folded += sum(_fold(module, conv, bn) for conv, bn in pairs)
    return folded


def optimize_for_inference(model: nn.Module, *, fold_bn: bool = True, channels_last: bool = True,
                           winograd: bool | None = None, compile: bool = False) -> nn.Module:
    """Prepare a detector for inference, in place, and return it (see the module docstring).

    fold_bn: fold BatchNorm into convs; channels_last: NHWC weights (activations follow); winograd: stride-1 3x3
    convs of ``neck`` and ``head`` on large maps run on NNPACK (None: where that pays off, see
    :func:`winograd_pays_off`; never under ``compile``, tracing or on GPUs); compile: wrap the forward of the
    detector's ``backbone``, ``neck`` and ``head`` in ``torch.compile`` with inductor's weight freezing (the first
    call per input shape compiles for minutes on a CPU; new shapes recompile). Post-processing is never compiled:
    its shapes depend on the data.
    """
    model.eval().requires_grad_(False)
    if fold_bn:
        fold_batchnorm(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if winograd is None:
        winograd = all(winograd_pays_off(device) for device in {p.device for p in model.parameters()})
    if winograd:
        # neck and head only: in the backbone NNPACK's thread pool and oneDNN's (the 1x1 convolutions between the
        # 3x3 ones) compete for the cores; with it the whole forward was slower (winograd_conv.py)
        for part in ("neck", "head"):
            swap_in_winograd_convs(getattr(model, part))
    if compile:
        for name in ("backbone", "neck", "head"):
            part = getattr(model, name)
            # freezing: weights become constants, so inductor folds and prepacks them and fuses conv epilogues
            # (needs inference_mode / no_grad at call time, which predict uses)
            part.forward = torch.compile(part.forward, dynamic=False, options={"freezing": True})
    return model
