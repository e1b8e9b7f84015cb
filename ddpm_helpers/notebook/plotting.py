"""Showing images: map the model's [-1, 1] range back to [0, 1] and draw grids.

Used by every chapter that shows images ("Forward and reverse process", "Sampling", ...).
The original CelebA tutorial passed [-1, 1] arrays straight to ``imshow``, which clips half of the range:
always go through :func:`to_display_range`.
"""

from __future__ import annotations

import numpy as np


def to_display_range(images) -> np.ndarray:
    """Map images from the model's range [-1, 1] to [0, 1] for display, clipping overshoot."""
    return np.clip((np.asarray(images, dtype=np.float32) + 1.0) / 2.0, 0.0, 1.0)


def to_uint8(images) -> np.ndarray:
    """Map images from [-1, 1] to uint8 0..255 (for files such as ``samples.npz``).

    NaN or infinite values raise ``ValueError``: they would silently become black pixels.
    """
    images = np.asarray(images, dtype=np.float32)
    finite = np.isfinite(images)
    if not finite.all():
        raise ValueError(
            f"{int(finite.size - finite.sum())} of {finite.size} values are NaN or infinite: these "
            "images are broken (e.g. sampled from a diverged model), not black. Retrain the model "
            "or load weights from before the divergence."
        )
    return np.round(to_display_range(images) * 255.0).astype(np.uint8)


def image_grid(images, *, columns: int | None = None, gap: int = 2, scale: int = 1) -> np.ndarray:
    """Images (N, H, W, C), uint8 or floats in [-1, 1], tiled as one uint8 picture (rows of ``columns``).

    ``columns`` defaults to a near-square grid; ``gap`` white pixels separate the tiles; each
    pixel is repeated ``scale`` times (32x32 faces read better at 2 or 4). One channel stays grey.
    """
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"Expected images of shape (N, H, W, C) with N >= 1, got {images.shape}.")
    tiles = images if images.dtype == np.uint8 else to_uint8(images)
    if scale > 1:
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    count, height, width, channels = tiles.shape
    columns = min(columns or int(np.ceil(np.sqrt(count))), count)
    rows = int(np.ceil(count / columns))
    grid = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap, channels), 255, np.uint8)
    for index, tile in enumerate(tiles):
        top, left = gap + (index // columns) * (height + gap), gap + (index % columns) * (width + gap)
        grid[top:top + height, left:left + width] = tile
    return grid


def save_image_grid(images, path, *, columns: int | None = None, gap: int = 2, scale: int = 1):
    """Write :func:`image_grid` of ``images`` to ``path`` (PNG; folders are created) and return the path."""
    from pathlib import Path

    from PIL import Image

    grid = image_grid(images, columns=columns, gap=gap, scale=scale)
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return path


def show_image_grid(images, *, columns: int | None = None, row_titles=None, column_titles=None,
                    size: float = 1.2, ax_title: str | None = None):
    """Draw images (N, H, W, C) in [-1, 1] as a grid and return the matplotlib figure.

    ``columns`` defaults to a near-square grid. One-channel images are drawn in grey.
    ``row_titles`` / ``column_titles`` label the left column and the top row.
    """
    import matplotlib.pyplot as plt

    images = to_display_range(images)
    if images.ndim != 4:
        raise ValueError(f"Expected images of shape (N, H, W, C), got {images.shape}.")
    count = images.shape[0]
    columns = columns or int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if index < count:
            image = images[index]
            if image.shape[-1] == 1:
                ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(image)
    if row_titles is not None:
        for ax, title in zip(axes[:, 0], row_titles):
            ax.set_ylabel(title, rotation=0, ha="right", va="center")
    if column_titles is not None:
        for ax, title in zip(axes[0], column_titles):
            ax.set_title(title, fontsize="small")
    if ax_title:
        fig.suptitle(ax_title)
    fig.tight_layout()
    return fig


BOOK_STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "image.interpolation": "nearest",
    "figure.constrained_layout.use": False,
}


def use_book_style() -> None:
    """One look for every figure of the book: sizes that read at the page's width (about 700
    pixels), no top/right frame, pixel art drawn with nearest-neighbour. Each chapter's first
    (hidden) cell calls it."""
    import matplotlib as mpl

    mpl.rcParams.update(BOOK_STYLE)
