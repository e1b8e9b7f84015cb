"""The reverse process as an animated GIF (chapter "Sampling", ``sec-sampling``).

A sampler called with ``snapshots=K`` returns K states x_t, from the noise x_T to the images
x_0 (:class:`ddpm_helpers.engine.sampling.SampleResult`). :func:`reverse_process_animation` turns them
into a matplotlib animation of a grid of images, :func:`save_gif` writes it with Pillow, and
:func:`gif_html` embeds the file in the page (as a base64 ``data:`` URL, so the built HTML needs no
separate image file).
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

# Where chapters write generated files (next to the pages; git-ignored).
GENERATED_DIR = Path("_generated")


def reverse_process_animation(snapshots, times=None, *, count: int = 16, columns: int = 8, size: float = 0.7,
                              interval: int = 100, hold: int = 8, title: str = "t = {t}"):
    """A ``matplotlib.animation.FuncAnimation`` of the first ``count`` images through the snapshots.

    ``snapshots``: (K, N, H, W, C) in the model's range [-1, 1] (mapped to [0, 1] for display);
    ``times``: the K time labels (e.g. ``result.snapshot_times``); ``interval``: milliseconds per
    frame; ``hold``: extra frames that show the final images before the loop restarts.
    Returns ``(animation, figure)``; close the figure after saving so it is not drawn twice.
    """
    import matplotlib.pyplot as plt
    from matplotlib import animation

    from ddpm_helpers.notebook.plotting import to_display_range

    snapshots = np.asarray(snapshots)
    if snapshots.ndim != 5:
        raise ValueError(f"snapshots must have shape (K, N, H, W, C), got {snapshots.shape}; "
                         "sample with snapshots=K to get them.")
    frames_total, n = snapshots.shape[:2]
    if times is not None and len(times) != frames_total:
        raise ValueError(f"Got {len(times)} times for {frames_total} snapshots.")
    count = min(count, n)
    columns = min(columns, count)
    rows = int(np.ceil(count / columns))
    frames = to_display_range(snapshots[:, :count])
    grey = frames.shape[-1] == 1
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows + 0.35), squeeze=False)
    images = []
    for index, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if index < count:
            first = frames[0, index, ..., 0] if grey else frames[0, index]
            images.append(ax.imshow(first, cmap="gray" if grey else None, vmin=0.0, vmax=1.0))
    heading = fig.suptitle("", fontsize="large")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.35 / (size * rows + 0.35), wspace=0.05,
                        hspace=0.05)

    def draw(frame):
        k = min(frame, frames_total - 1)
        for index, image in enumerate(images):
            image.set_data(frames[k, index, ..., 0] if grey else frames[k, index])
        if times is not None:
            heading.set_text(title.format(t=times[k]))
        return images + [heading]

    anim = animation.FuncAnimation(fig, draw, frames=frames_total + hold, interval=interval, blit=False)
    return anim, fig


def save_gif(snapshots, path, times=None, **kwargs) -> Path:
    """Write the reverse process as a GIF (matplotlib's Pillow writer) and return its path.

    Keyword arguments go to :func:`reverse_process_animation`.
    """
    import matplotlib.pyplot as plt
    from matplotlib import animation

    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"The file name must end in .gif, got {str(path)!r}.")
    anim, fig = reverse_process_animation(snapshots, times, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    fps = 1000.0 / kwargs.get("interval", 100)
    anim.save(path, writer=animation.PillowWriter(fps=fps), dpi=80)
    plt.close(fig)
    return path


def gif_html(path, *, width: int | None = None, alt: str = "The reverse process, from noise to images"):
    """An ``IPython.display.HTML`` that shows the GIF inline (base64), so it is part of the built page."""
    from IPython.display import HTML

    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    size = f' width="{int(width)}"' if width else ""
    return HTML(f'<img src="data:image/gif;base64,{data}" alt="{alt}"{size}/>')


def gif_frame_count(path) -> int:
    """Number of frames in a GIF file (read with Pillow)."""
    from PIL import Image

    with Image.open(path) as image:
        return int(getattr(image, "n_frames", 1))
