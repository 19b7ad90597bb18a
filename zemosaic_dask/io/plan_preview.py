"""Drawing a plan: every batch's frame footprints over the output grid, one colour per batch."""

from __future__ import annotations

import colorsys
import math
import os

import numpy as np
from PIL import Image, ImageDraw

from ..plans.mosaic import MosaicPlan

__all__ = ["write_plan_preview"]


def _colour(index: int, count: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def write_plan_preview(path: str | os.PathLike[str], plan: MosaicPlan, *, max_side: int = 1600) -> tuple[int, int]:
    """Write a PNG of the plan: the canvas, each batch's frame footprints and its id.

    Frames of one batch share a colour; for Mosaic-First every frame is drawn in grey.
    Returns the image's ``(height, width)``.
    """
    height, width = plan.grid.shape
    factor = max(1.0, max(height, width) / max_side)
    size = (max(1, math.ceil(width / factor)), max(1, math.ceil(height / factor)))
    image = Image.new("RGB", size, (12, 12, 20))
    draw = ImageDraw.Draw(image, "RGBA")
    wcs = plan.grid.wcs
    layers = plan.layers
    groups = [(layer.id, layer.distinct) for layer in layers] or [(0, tuple(range(len(plan.frames))))]
    for position, (layer_id, members) in enumerate(groups):
        colour = _colour(position, len(groups)) if layers else (170, 170, 170)
        centres = []
        for index in members:
            world = plan.frames[index].footprint_world(points_per_edge=2)
            x, y = wcs.all_world2pix(world[:, 0], world[:, 1], 0)
            # FITS rows go up, image rows go down: flip so north is up in the picture.
            points = [(float(px) / factor, (height - 1 - float(py)) / factor) for px, py in zip(x, y, strict=True)]
            draw.polygon(points, outline=colour + (230,), fill=colour + (28,))
            centres.append(np.mean(points, axis=0))
        if layers and centres:
            cx, cy = np.mean(centres, axis=0)
            draw.text((float(cx), float(cy)), str(layer_id), fill=(255, 255, 255, 255))
    image.save(path, format="PNG")
    return size[1], size[0]
