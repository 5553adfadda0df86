"""Sample pictures as PNG with PIL only: a scatter for 2-D samples, an image grid for images.

Pure functions returning PIL images (callers save them); used by the command line and by
scripts/make_assets.py for the README pictures.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

_INK = (31, 73, 125)


def scatter_image(x, lim: float = 2.5, size: int = 360, title: Optional[str] = None) -> Image.Image:
    """Points x (N, 2) drawn as 1-pixel dots on a size x size square showing [-lim, lim]^2."""
    pts = np.asarray(torch.as_tensor(x).detach().cpu().double())
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"a scatter needs points of shape (N, 2), got {pts.shape}")
    top = 22 if title else 0
    img = Image.new("RGB", (size, size + top), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((6, 5), title, fill=(0, 0, 0))
    draw.rectangle([0, top, size - 1, top + size - 1], outline=(160, 160, 160))
    px = (pts[:, 0] + lim) / (2 * lim) * (size - 1)
    py = (lim - pts[:, 1]) / (2 * lim) * (size - 1) + top  # y axis points up
    keep = np.isfinite(px) & np.isfinite(py) & (px >= 0) & (px < size) & (py >= top) & (py < top + size)
    arr = np.asarray(img).copy()
    arr[py[keep].astype(int), px[keep].astype(int)] = _INK
    return Image.fromarray(arr)


def grid_image(x, ncol: int = 10, scale: int = 4, value_range: tuple[float, float] = (-1.0, 1.0),
               title: Optional[str] = None, pad: int = 2) -> Image.Image:
    """Images x (N, C, H, W) (C = 1 or 3) tiled ncol per row, each upscaled `scale` times
    (nearest), values mapped from value_range to black..white."""
    a = np.asarray(torch.as_tensor(x).detach().cpu().float())
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ValueError(f"an image grid needs shape (N, 1 or 3, H, W), got {a.shape}")
    lo, hi = value_range
    a = np.clip((a - lo) / (hi - lo), 0, 1)
    a = np.nan_to_num(a, nan=0.0)
    n, c, h, w = a.shape
    a = a.repeat(scale, 2).repeat(scale, 3)  # (N, C, sH, sW)
    nrow = -(-n // ncol)
    H, W = h * scale + pad, w * scale + pad
    top = 16 if title else 0
    canvas = np.full((nrow * H + pad + top, min(n, ncol) * W + pad, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        tile = (255 * a[i]).astype(np.uint8).transpose(1, 2, 0)  # (sH, sW, C)
        canvas[top + pad + r * H: top + pad + r * H + h * scale, pad + q * W: pad + q * W + w * scale] = tile
    img = Image.fromarray(canvas)
    if title:
        ImageDraw.Draw(img).text((4, 2), title, fill=(0, 0, 0))
    return img


def samples_image(x, title: Optional[str] = None, lim: float = 2.5, ncol: int = 10) -> Image.Image:
    """A scatter for (N, 2) samples, an image grid for (N, C, H, W)."""
    shape = tuple(torch.as_tensor(x).shape)
    if len(shape) == 2 and shape[1] == 2:
        return scatter_image(x, lim=lim, title=title)
    if len(shape) == 4:
        return grid_image(x, ncol=ncol, title=title)
    raise ValueError(f"no picture for samples of shape {shape}: need (N, 2) points or (N, C, H, W) images")


def hstack(images: Sequence[Image.Image], gap: int = 8) -> Image.Image:
    """Pictures side by side on white, top-aligned."""
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (width, max(im.height for im in images)), "white")
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + gap
    return out
