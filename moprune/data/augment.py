"""Label-preserving augmentation of image mini-batches, drawn from one ``torch.Generator``."""

from typing import Optional

import torch
from torch.nn import functional as F

from moprune.validation import check_choice

#: The augmentations :func:`augment_batch` (and ``fit(augment=...)``) know.
AUGMENTATIONS = ("flip", "flip+crop", "crop")

#: Pixels of zero padding around an image before a random crop back to its size (shifts of +-2 pixels).
CROP_PADDING = 2


def augment_batch(images: torch.Tensor, kind: str, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Augment a batch ``N x C x H x W`` of images, each image on its own draw.

    Args:
        images: The batch (left unchanged; a new tensor is returned).
        kind: ``"flip"``: mirror each image left-right with probability 1/2; ``"flip+crop"``:
            that, then pad by :data:`CROP_PADDING` zero pixels and crop a random ``H x W`` window
            (a shift of up to 2 pixels in each direction); ``"crop"``: the shift alone (for digits,
            which a mirror turns into other symbols).
        generator: Source of every random draw (``None``: torch's global generator).

    Returns:
        The augmented batch, same shape and dtype.
    """
    check_choice("augment", kind, AUGMENTATIONS)
    n, c, h, w = images.shape
    out = images
    if kind in ("flip", "flip+crop"):
        flip = torch.rand(n, generator=generator) < 0.5
        out = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if kind in ("crop", "flip+crop"):
        pad = CROP_PADDING
        padded = F.pad(out, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
        out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    return out
