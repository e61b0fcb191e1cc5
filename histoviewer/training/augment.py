"""Histology augmentation as batched tensor operations on the training device.

Input and output are uint8 RGB batches (N, S, S, 3), so the result goes through the
same :func:`histoviewer.model.preprocess` as inference. Every random draw comes from
the ``torch.Generator`` passed in (seeded per epoch by the trainer), so an epoch
replays identically after a resume.

- flips / rot90: exact pixel permutations (tissue has no up or left); with both, all
  eight symmetries of the square are equally likely.
- scale jitter: a random square crop keeping at least ``scale_jitter`` of the side,
  resized back to S (bilinear): +-20 % magnification at 0.8.
- stain jitter: each image's optical density is split into haematoxylin, eosin and DAB
  (Ruifrok & Johnston 2001) and each stain scaled by U(1-s, 1+s) and shifted by
  U(-s, s) OD units (Tellez et al. 2018). This is scikit-image's colour deconvolution
  (``hed2rgb(rgb2hed(x) * scale + shift / ln(10^6))``: rgb2hed's stains are natural-log
  optical densities divided by ln(10^6), ours are not), tested against it, with two
  differences where rgb2hed loses information: stain amounts below zero are kept, not
  clipped, and a pixel value v is read as (255 v + 1) / 256 (exactly undone), so that
  black is finite; with scale 1 and shift 0 every image comes back unchanged.
  :func:`shift_stains` is this transform with given factors; the robustness figures
  (:mod:`histoviewer.training.robustness`) test models under fixed ones.
- colour jitter: brightness, contrast and saturation factors U(1-c, 1+c); no hue
  rotation, which would give colours no H&E slide has.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from histoviewer.training.config import TrainConfig

# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB) in OD space.
_RGB_FROM_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32
)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_LUMA = (0.299, 0.587, 0.114)


class Augmenter:
    """Applies the augmentations enabled in a :class:`TrainConfig` to uint8 NHWC batches."""

    def __init__(self, config: TrainConfig) -> None:
        self.flips = config.flips
        self.rot90 = config.rot90
        self.scale = config.scale_jitter
        self.stain = config.stain_jitter
        self.color = config.color_jitter
        self._constants: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Copied to the device once: a host-to-device copy per batch would stall the GPU.
        if device not in self._constants:
            self._constants[device] = (
                _HED_FROM_RGB.to(device),
                _RGB_FROM_HED.to(device),
                torch.tensor(_LUMA, device=device).view(1, 3, 1, 1),
            )
        return self._constants[device]

    @property
    def enabled(self) -> bool:
        return self.flips or self.rot90 or self.scale < 1.0 or self.stain > 0 or self.color > 0

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not self.enabled:
            return batch
        x = self._symmetries(batch, generator)
        if self.scale >= 1.0 and self.stain <= 0 and self.color <= 0:
            return x
        y = x.permute(0, 3, 1, 2).float().div_(255.0)  # NCHW in [0, 1]
        if self.scale < 1.0:
            y = self._zoom(y, generator)
        if self.stain > 0:
            y = self._stain(y, generator)
        if self.color > 0:
            y = self._color(y, generator)
        return (
            y.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        )

    def _coin(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        return (_uniform(n, generator, device) < 0.5).view(n, 1, 1, 1)

    def _symmetries(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        if self.rot90 and not self.flips:
            k = (_uniform(n, generator, dev) * 4).long().clamp_(max=3).view(n, 1, 1, 1)
            x = torch.where(k % 2 == 1, torch.rot90(x, 1, dims=(1, 2)), x)
            return torch.where(k >= 2, x.flip(1).flip(2), x)
        if self.rot90:  # with flips: transpose + two flips reach all 8 symmetries
            x = torch.where(self._coin(n, generator, dev), x.transpose(1, 2), x)
        if self.flips:
            x = torch.where(self._coin(n, generator, dev), x.flip(2), x)
            x = torch.where(self._coin(n, generator, dev), x.flip(1), x)
        return x

    def _zoom(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, dev = y.shape[0], y.device
        side = self.scale + (1.0 - self.scale) * _uniform(n, generator, dev)
        room = 1.0 - side
        tx = room * (2 * _uniform(n, generator, dev) - 1)
        ty = room * (2 * _uniform(n, generator, dev) - 1)
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, 0, 0] = side
        theta[:, 1, 1] = side
        theta[:, 0, 2] = tx
        theta[:, 1, 2] = ty
        grid = F.affine_grid(theta, list(y.shape), align_corners=False)
        return F.grid_sample(y, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _stain(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, dev = y.shape[0], y.device
        s = self.stain
        alpha = 1 + s * (2 * _uniform(n * 3, generator, dev) - 1)
        beta = s * (2 * _uniform(n * 3, generator, dev) - 1)
        hed_from_rgb, rgb_from_hed, _ = self._on(dev)
        return shift_stains(
            y, alpha.view(n, 3), beta.view(n, 3), matrices=(hed_from_rgb, rgb_from_hed)
        )

    def _color(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, dev = y.shape[0], y.device
        c = self.color

        def factor() -> torch.Tensor:
            return (1 + c * (2 * _uniform(n, generator, dev) - 1)).view(n, 1, 1, 1)

        luma = self._on(dev)[2]
        y = y * factor()
        mean = (y * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        y = (y - mean) * factor() + mean
        gray = (y * luma).sum(1, keepdim=True)
        y = (y - gray) * factor() + gray
        return y.clamp_(0.0, 1.0)


def shift_stains(
    y: torch.Tensor,
    scale: torch.Tensor | Sequence[float],
    shift: torch.Tensor | Sequence[float],
    *,
    matrices: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Scale and shift the haematoxylin, eosin and DAB amounts of RGB images: the stain
    jitter's transform (module docstring) with given, not drawn, factors.

    ``y``: float NCHW in [0, 1]. ``scale`` and ``shift`` (optical density, natural log):
    three values (H, E, DAB) for every image, or (N, 3), one row per image. Returns float
    NCHW in [0, 1]; with scale 1 and shift 0 it is ``y`` again up to float rounding (exact
    after rounding to uint8). ``matrices``: (hed_from_rgb, rgb_from_hed) already on
    ``y``'s device, so that a caller transforming many batches copies them there once.
    Shared by the training augmentation and the robustness figures
    (:mod:`histoviewer.training.robustness`), so the stain shifts a model is tested under
    are the ones it was trained with.
    """
    dev = y.device
    if matrices is None:
        matrices = (_HED_FROM_RGB.to(dev), _RGB_FROM_HED.to(dev))
    hed_from_rgb, rgb_from_hed = matrices
    scale = torch.as_tensor(scale, dtype=torch.float32, device=dev).reshape(-1, 3, 1, 1)
    shift = torch.as_tensor(shift, dtype=torch.float32, device=dev).reshape(-1, 3, 1, 1)
    # (x * 255 + 1) / 256 keeps log() finite on black pixels and is exactly undone below.
    od = -torch.log((y * 255.0 + 1.0) / 256.0)
    hed = torch.einsum("nchw,cd->ndhw", od, hed_from_rgb)
    hed = hed * scale + shift
    od = torch.einsum("nchw,cd->ndhw", hed, rgb_from_hed)
    return ((torch.exp(-od) * 256.0 - 1.0) / 255.0).clamp_(0.0, 1.0)


def _uniform(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device)
