"""Network architectures (PyTorch; training and export only — the daemon never imports this).

Both are fully convolutional with constant-factor resampling only (max-pool,
stride-2 transposed convolution, pixel shuffle), so they export to ONNX with
dynamic batch and spatial axes and build in TensorRT without dynamic Resize.
Spatial sizes must be multiples of ``2**depth``.

- :class:`UNet` — virtual staining: LED-array channels -> fluorescence channels.
- :class:`SuperResolutionNet` — widefield -> ``scale``× sampled super-resolution
  (a U-Net at the input sampling followed by a pixel shuffle).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["ARCHITECTURES", "SuperResolutionNet", "UNet", "build", "count_parameters"]


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


ARCHITECTURES: dict[str, type[nn.Module]] = {"unet": UNet, "sr-unet": SuperResolutionNet}


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
