"""Network architectures (PyTorch; training and export only — the daemon never imports this).

Both are fully convolutional with constant-factor resampling only (max-pool,
stride-2 transposed convolution, pixel shuffle), so they export to ONNX with
dynamic batch and spatial axes and build in TensorRT without dynamic Resize.
Spatial sizes must be multiples of ``2**depth``.

- :class:`UNet` — virtual staining: LED-array channels -> fluorescence channels.
- :class:`SuperResolutionNet` — widefield -> ``scale``× sampled super-resolution
  (a U-Net at the input sampling followed by a pixel shuffle).
- :class:`LiveNet` — the real-time tier for either task: pixel-unshuffle stem,
  dilated depthwise-separable residual blocks at 1/``unshuffle`` resolution,
  pixel-shuffle head; trained by distillation from the accurate model
  (:mod:`.training`, ``teacher``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ARCHITECTURES", "LiveNet", "SuperResolutionNet", "UNet", "build", "count_parameters"]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` down/up levels; ``width`` channels at the top, doubling per level."""

    def __init__(self, in_channels: int, out_channels: int, depth: int = 3, width: int = 16) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
        self.depth = depth
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(in_channels, chans[0])] + [_block(chans[i], chans[i + 1]) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))])
        self.merge = nn.ModuleList([_block(2 * chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], out_channels, 1)

    @property
    def multiple(self) -> int:
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


class SuperResolutionNet(nn.Module):
    """Widefield -> ``scale``× sampling: a U-Net predicting ``scale²`` sub-pixel phases, then pixel shuffle."""

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2, depth: int = 3, width: int = 16) -> None:
        super().__init__()
        self.scale = scale
        self.body = UNet(in_channels, out_channels * scale * scale, depth, width)
        self.shuffle = nn.PixelShuffle(scale)

    @property
    def multiple(self) -> int:
        return self.body.multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.body(x))


class _SeparableBlock(nn.Module):
    """Residual ``x + pw(relu(bn(dw(x))))``: a dilated 3×3 depthwise conv, then a 1×1 mix."""

    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, groups=width, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.pw = nn.Conv2d(width, width, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw(self.act(self.bn(self.dw(x))))


class LiveNet(nn.Module):
    """CPU real-time network: every full-resolution pixel is touched only by the stem and the head.

    ``PixelUnshuffle(unshuffle)`` folds each ``unshuffle``² block into channels;
    a 3×3 stem, then ``blocks`` depthwise-separable residual blocks with
    dilations 1, 2, 4, … (receptive field ≈ ``unshuffle`` × (3 + 2·Σ dilations)
    input pixels) at that low resolution; a 1×1 head predicts
    ``out_channels × (unshuffle·scale)²`` sub-pixel values and a pixel shuffle
    puts them back at ``scale``× the input sampling (``scale`` 1 for virtual
    staining, 2 for super-resolution). Spatial sizes must be multiples of
    ``unshuffle``.

    The stem's parameters are those of the pixel unshuffle + 3×3 convolution
    (``stem``), but :meth:`forward` runs them as the one equivalent convolution
    with a (3·unshuffle)² kernel and stride ``unshuffle`` (same sums, same
    outputs). ONNX has no pixel unshuffle in PyTorch's channel order, so the
    exporter writes it as a 6-D Transpose, which ONNX Runtime CPU runs slowly:
    6 of the 21 ms of the virtual-staining live tier at 512² on 2 threads.
    Folded, that tier runs 1.3-1.5× faster; training speed is unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, scale: int = 1, width: int = 48, blocks: int = 6,
                 unshuffle: int = 4) -> None:
        super().__init__()
        if min(width, blocks, unshuffle, scale) < 1:
            raise ValueError(f"width, blocks, unshuffle and scale must be >= 1, got {width}, {blocks}, "
                             f"{unshuffle}, {scale}")
        self.scale, self.unshuffle = scale, unshuffle
        self.stem = nn.Sequential(nn.PixelUnshuffle(unshuffle),
                                  nn.Conv2d(in_channels * unshuffle**2, width, 3, padding=1),
                                  nn.ReLU(inplace=True))
        self.body = nn.Sequential(*[_SeparableBlock(width, 2 ** (i % 3)) for i in range(blocks)])
        self.head = nn.Sequential(nn.Conv2d(width, out_channels * (unshuffle * scale) ** 2, 1),
                                  nn.PixelShuffle(unshuffle * scale))

    @property
    def multiple(self) -> int:
        return self.unshuffle

    def folded_stem_weight(self) -> torch.Tensor:
        """The stem's 3×3 kernel on the unshuffled channels as a (3r)×(3r) kernel on the input (r = unshuffle).

        Channel ``c·r² + i·r + j`` at kernel offset ``(dy, dx)`` reads input pixel ``(y·r + dy·r + i - r,
        x·r + dx·r + j - r)``, i.e. the folded kernel's ``(dy·r + i, dx·r + j)`` at stride r, padding r.
        """
        w, r = self.stem[1].weight, self.unshuffle
        return w.view(w.shape[0], -1, r, r, 3, 3).permute(0, 1, 4, 2, 5, 3).reshape(w.shape[0], -1, 3 * r, 3 * r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.unshuffle
        x = F.relu(F.conv2d(x, self.folded_stem_weight(), self.stem[1].bias, stride=r, padding=r))
        return self.head(self.body(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {"unet": UNet, "sr-unet": SuperResolutionNet, "live": LiveNet}


def build(arch: str, config: dict[str, Any]) -> nn.Module:
    """Instantiate architecture ``arch`` with keyword ``config``; errors name valid choices."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; architectures: {', '.join(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[arch](**config)
    except TypeError as e:
        raise ValueError(f"bad configuration for architecture {arch!r}: {e}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
