"""The weight gradient of a stride-1, padding-1 3x3 convolution by Winograd's F(4x4, 3x3) algorithm, for CPU
training.

Forward, Winograd computes a 4x4 output tile from a 6x6 input tile ``d`` and the 3x3 kernel ``g`` as
``Y = A^T [(G g G^T) * (B^T d B)] A`` (``*`` elementwise; Lavin and Gray, 2016). ``Y`` is linear in ``g``, and its
adjoint gives the kernel's gradient from the output gradient's 4x4 tile ``E``:

    dL/dg = sum over tiles of  G^T [(A E A^T) * (B^T d B)] G

Summed over the tiles of every image, the elementwise product becomes 36 matrix products over the channels,
``(C_out x tiles) @ (tiles x C_in)``, one per point of the 6x6 transform domain: 36 / 16 = 2.25 multiply-accumulates
per output position and channel pair instead of the direct algorithm's 9. The tile transforms are convolutions of
every channel with 36 fixed kernels (6x6 at stride 4 for the input, 4x4 at stride 4 for the output gradient),
which oneDNN runs near memory speed; the matrix products go to MKL.

Written by hand because nothing reachable does it: oneDNN has no Winograd kernels for these CPUs, and PyTorch does
not expose NNPACK's kernel-gradient routine. Measured against oneDNN's weight gradient (``aten.convolution_backward``)
on an AVX2-only AMD EPYC (Zen 2), 2 threads, ``train.cpu_allocator: reuse``, medians of 5:

    256->256 at 2x100x168 (P3 of 800x1333)   121 ms vs 273 ms
    256->256 at 8x64x64   (P3 of 512x512)    122 ms vs 263 ms
    256->256 at 8x32x32                       38 ms vs  68 ms
    256->68  at 8x64x64   (a head's output)   56 ms vs  79 ms
    128->128 at 8x64x64   (ResNet layer2)     45 ms vs  70 ms
     64->64  at 8x128x128 (ResNet layer1)     69 ms vs  72 ms: the transforms outweigh the saving
    512->512 at 8x16x16   (16 tiles an image) 62 ms vs  65 ms: matrix products too short

hence :func:`winograd_weight_grad_pays_off`. Extra memory while it runs: the transformed tiles, 2.25x the layer's
input and output gradient, little next to the activations a training step keeps (transforming image by image
inside the loop needed 1/N of it and took 0-8 % longer). Rounding, relative to the largest gradient entry,
against float64: 5e-6 to 7e-6 (the direct algorithm's: 2e-6 to 1.7e-5 at the same sizes).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = ["MIN_MACS_PER_TRANSFORMED_VALUE", "MIN_TILES_PER_IMAGE", "conv3x3_weight_grad",
           "winograd_weight_grad_pays_off"]

# C_in x C_out / (C_in + C_out): the matrix products' multiply-accumulates per value the transforms produce.
# 64->64 (32) broke even with oneDNN, 256->68 (54) and 128->128 (64) took 0.65-0.70 of its time.
MIN_MACS_PER_TRANSFORMED_VALUE = 48
# 4x4 output tiles per image (an image's tiles are one matrix product's inner dimension): at 16 (512->512 at
# 16x16) MKL's products were no faster than oneDNN's direct kernel, at 77 (2x512x25x42) 0.58 of its time.
MIN_TILES_PER_IMAGE = 64

# F(4x4, 3x3) with interpolation points 0, +-1, +-2 and infinity.
_INPUT_TRANSFORM = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
                    (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))          # B^T, 6x6
_KERNEL_TRANSFORM = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
                     (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))            # G, 6x3
_OUTPUT_TRANSFORM = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0),
                     (0, 1, -1, 8, -8, 1))                                                      # A^T, 4x6


def winograd_weight_grad_pays_off(in_channels: int, out_channels: int, height: int, width: int) -> bool:
    """Whether :func:`conv3x3_weight_grad` beats oneDNN for this layer and map size (module docstring)."""
    tiles_per_image = -(-height // 4) * -(-width // 4)
    return (in_channels * out_channels >= MIN_MACS_PER_TRANSFORMED_VALUE * (in_channels + out_channels)
            and tiles_per_image >= MIN_TILES_PER_IMAGE)


@functools.cache
def _transform_kernels(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The transforms as convolution kernels: input (36, 1, 6, 6) giving B^T d B, output gradient (36, 1, 4, 4)
    giving A E A^T (transform point i * 6 + j as channel), and the kernel gradient's (9, 36) giving G^T M G."""
    b_t, g, a_t = (torch.tensor(m, dtype=torch.float64)
                   for m in (_INPUT_TRANSFORM, _KERNEL_TRANSFORM, _OUTPUT_TRANSFORM))
    input_kernels = torch.einsum("ia,jb->ijab", b_t, b_t).reshape(36, 1, 6, 6)
    grad_kernels = torch.einsum("ai,bj->ijab", a_t, a_t).reshape(36, 1, 4, 4)
    to_kernel_grad = torch.einsum("ik,jl->klij", g, g).reshape(9, 36)
    return input_kernels.to(dtype), grad_kernels.to(dtype), to_kernel_grad.to(dtype)


def _transformed_tiles(maps: torch.Tensor, kernels: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    """Every channel of every image of ``maps`` (N, C, H, W; contiguous), zero-padded by ``padding`` (left, right,
    top, bottom), transformed tile by tile at stride 4 with ``kernels`` (36, 1, k, k): (N, C, 36, tiles)."""
    padded = F.pad(maps, padding)
    tiles = F.conv2d(padded.view(-1, 1, *padded.shape[2:]), kernels, stride=4)
    return tiles.view(*maps.shape[:2], 36, -1)


def conv3x3_weight_grad(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """The gradient (C_out, C_in, 3, 3) of a stride-1, padding-1 3x3 convolution's weight, from its input ``x``
    (N, C_in, H, W) and the output's gradient ``grad_output`` (N, C_out, H, W), in any memory format; any H and W
    (the maps are padded with zeros to whole 4x4 tiles, which adds nothing to the sum)."""
    x, grad_output = x.contiguous(), grad_output.contiguous()  # the transforms view every channel as an image
    num_images, in_channels, height, width = x.shape
    out_channels = grad_output.shape[1]
    tile_rows, tile_cols = -(-height // 4), -(-width // 4)
    input_kernels, grad_kernels, to_kernel_grad = _transform_kernels(x.dtype)
    # 6x6 input tiles overlap by 2 (stride 4, the convolution's own zero border of 1 on top and left)
    tiles_in = _transformed_tiles(x, input_kernels, (1, 4 * tile_cols + 1 - width, 1, 4 * tile_rows + 1 - height))
    tiles_grad = _transformed_tiles(grad_output, grad_kernels, (0, 4 * tile_cols - width, 0, 4 * tile_rows - height))
    # per transform point: (C_out x tiles) @ (tiles x C_in), accumulated image by image; strided views, no copies
    products = torch.bmm(tiles_grad[0].transpose(0, 1), tiles_in[0].permute(1, 2, 0))
    for image in range(1, num_images):
        products.baddbmm_(tiles_grad[image].transpose(0, 1), tiles_in[image].permute(1, 2, 0))
    kernel_grad = torch.mm(to_kernel_grad, products.view(36, -1))                  # (9, C_out * C_in)
    return kernel_grad.view(3, 3, out_channels, in_channels).permute(2, 3, 0, 1).contiguous()
