"""CelebA for the seed configuration (chapter "Scaling up", ``sec-scaling-up``).

The aligned CelebA faces (Liu et al. 2015) come from Kaggle as one archive,
https://www.kaggle.com/datasets/jessicali9530/celeba-dataset, laid out as::

    img_align_celeba/img_align_celeba/000001.jpg ... 202599.jpg   (178 wide, 218 high)
    list_attr_celeba.csv, list_bbox_celeba.csv, ...               (not used here)

:func:`prepare_celeba` turns that archive (or the folder it unpacks to) into a folder of
small square PNGs that ``--data folder:OUT`` trains on: each face is cropped to its central
square (178x178: 20 rows off the top and the bottom, the crop Keras' ``crop_to_aspect_ratio``
makes, so :func:`ddpm_helpers.engine.image_folders.load_image_folder` reads the PNGs unchanged) and
resized to ``image_size`` with Pillow's antialiased bilinear filter. The original CelebA tutorial
squashed the whole 178x218 face to 32x32 instead (``keras.utils.image_dataset_from_directory``
without cropping); ``crop="squash"`` reproduces that. Preparing once also spares every run
the decoding of the large JPEGs: 3,072 values per 32x32 face instead of 116,412.

Command line: ``python -m ddpm_helpers prepare-celeba ARCHIVE_OR_FOLDER data/celeba32 [--size 32]
[--limit N] [--strict]`` (also ``python -m ddpm_helpers.engine.celeba``). A damaged file is
skipped and listed at the end (``--strict`` stops at it instead); Ctrl-C prints one line saying
how many faces were written and that the same command continues.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

CELEBA_URL = "https://www.kaggle.com/datasets/jessicali9530/celeba-dataset"
CELEBA_SIZE = (178, 218)  # width, height of an aligned face
CELEBA_COUNT = 202_599
CELEBA_FOLDER = "img_align_celeba"  # every face sits in a folder of this name
CROPS = ("center", "squash")
MANIFEST = "celeba_prepared.json"  # written into OUT; not an image, so loaders skip it


def crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The central square of a ``width`` x ``height`` image as (left, top, right, bottom).

    For a 178x218 face: (0, 20, 178, 198). Offsets are rounded down, as Keras'
    ``crop_to_aspect_ratio`` rounds them.
    """
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def crop_and_resize(image, image_size: int = 32, crop: str = "center"):
    """A PIL image cropped (``"center"``: its central square; ``"squash"``: not at all)
    and resized to ``image_size`` x ``image_size`` RGB (antialiased bilinear)."""
    from PIL import Image

    if crop not in CROPS:
        raise ValueError(
            f"Unknown crop {crop!r}: use one of {', '.join(CROPS)}."
        )
    image = image.convert("RGB")
    if crop == "center":
        image = image.crop(crop_box(*image.size))
    return image.resize((image_size, image_size), Image.Resampling.BILINEAR)


def _is_face(name: str) -> bool:
    parts = Path(name).parts
    return (name.lower().endswith((".jpg", ".jpeg", ".png")) and CELEBA_FOLDER in parts[:-1]
            and "__MACOSX" not in parts and not parts[-1].startswith("."))


def _layout_help() -> str:
    return (f"Expected the CelebA archive from {CELEBA_URL} (archive.zip) or the folder it "
            f"unpacks to, with the faces under {CELEBA_FOLDER}/{CELEBA_FOLDER}/000001.jpg ...")


def list_faces(archive_or_folder) -> list[str]:
    """The faces in a CelebA zip or folder, sorted by file name: zip member names or paths.

    Raises ``ValueError`` for a missing path, a file that is not a zip, and an archive or
    folder without images under a folder named ``img_align_celeba``.
    """
    path = Path(archive_or_folder).expanduser()
    if not path.exists():
        raise ValueError(f"{str(path)!r} does not exist. " + _layout_help())
    if path.is_dir():
        names = [str(p) for p in path.rglob("*")
                 if p.is_file() and _is_face(str(p.relative_to(path.parent)))]
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/") and _is_face(n)]
    else:
        raise ValueError(f"{str(path)!r} is neither a folder nor a zip archive. " + _layout_help())
    if not names:
        raise ValueError(f"{str(path)!r} holds no images under a folder named "
                         f"{CELEBA_FOLDER!r}. " + _layout_help())
    return sorted(names, key=lambda n: Path(n).name)


class PreparationInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`prepare_celeba`: what was written, and how to continue."""

    def __init__(self, written: int, done: int, total: int, folder: str):
        self.written, self.done, self.total, self.folder = written, done, total, folder
        super().__init__(
            f"Interrupted: {done:,} of {total:,} faces are in {folder} ({written:,} written now); "
            "run the same command again to continue (faces already written are skipped).")


def prepare_celeba(archive_or_folder, out_folder, image_size: int = 32, *,
                   crop: str = "center", limit: int | None = None,
                   progress_every: int = 0, strict: bool = False) -> dict:
    """Write CelebA's faces as ``image_size`` x ``image_size`` PNGs into ``out_folder``.

    ``archive_or_folder`` is Kaggle's ``archive.zip`` (read in place: nothing is unpacked to
    disk) or the folder it unpacks to. ``000001.jpg`` becomes ``out_folder/000001.png``,
    cropped and resized by :func:`crop_and_resize`. ``limit`` keeps the first faces only (a
    quick try). Faces already written are skipped, so an interrupted run can simply be started
    again; a folder prepared with other settings raises ``ValueError``. ``progress_every``
    prints a line every that many faces (0: silent). A face that cannot be read is skipped and
    listed in ``damaged`` (``strict=True`` raises ``ValueError`` at the first instead). Ctrl-C
    raises :class:`PreparationInterrupted` (a ``KeyboardInterrupt``) saying what was written.
    Returns a summary: ``written``, ``skipped``, ``damaged`` (names), ``total``, ``seconds``,
    ``image_size``, ``crop`` and ``folder``.
    """
    from PIL import Image

    if crop not in CROPS:
        raise ValueError(f"Unknown crop {crop!r}: use one of {', '.join(CROPS)}.")
    if int(image_size) < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}.")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"--limit must be a number of faces, at least 1, got {limit} (leave it out "
                         "to prepare all of them).")
    names = list_faces(archive_or_folder)[:limit]
    out = Path(out_folder).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    settings = {"image_size": int(image_size), "crop": crop}
    manifest = out / MANIFEST
    if manifest.exists():
        earlier = {k: json.loads(manifest.read_text()).get(k) for k in settings}
        if earlier != settings:
            raise ValueError(
                f"{str(out)!r} was prepared with {earlier}, not {settings}: choose another "
                "output folder (or delete this one) to prepare it again.")
    manifest.write_text(json.dumps({**settings, "source": str(archive_or_folder)}) + "\n")

    path = Path(archive_or_folder).expanduser()
    archive = zipfile.ZipFile(path) if path.is_file() else None
    began, written, skipped, damaged = time.perf_counter(), 0, 0, []
    try:
        for index, name in enumerate(names, 1):
            target = out / (Path(name).stem + ".png")
            if target.exists():
                skipped += 1
                continue
            try:
                with (archive.open(name) if archive else open(name, "rb")) as file:
                    with Image.open(file) as image:
                        small = crop_and_resize(image, image_size, crop)
            except Exception as error:  # Pillow raises several types for broken files
                if strict:
                    raise ValueError(
                        f"Cannot read {name!r} ({type(error).__name__}: {error}): the archive is "
                        "damaged or incomplete; download it again.") from error
                damaged.append(name)
                continue
            partial = target.with_suffix(".part")
            small.save(partial, format="PNG")
            partial.replace(target)  # a face is either whole or absent
            written += 1
            if progress_every and index % progress_every == 0:
                print(f"prepared {index:,} of {len(names):,} faces", flush=True)
    except KeyboardInterrupt:
        raise PreparationInterrupted(written, written + skipped, len(names), str(out)) from None
    finally:
        if archive is not None:
            archive.close()
    return {"written": written, "skipped": skipped, "damaged": damaged, "total": len(names),
            "seconds": time.perf_counter() - began, **settings, "folder": str(out)}


def make_fake_celeba(path, count: int = 8, *, seed: int = 0, as_zip: bool = True) -> Path:
    """A tiny stand-in for Kaggle's CelebA archive: ``count`` random 178x218 JPEGs laid out
    as in ``archive.zip`` (plus one of its CSV files), as a zip at ``path`` or a folder.

    Each fake face is a smooth colour gradient with a bright disc in its central square, so
    a test can tell a crop from a squash. Used by the tests and the chapter "Scaling up".
    """
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = CELEBA_SIZE
    y, x = np.mgrid[0:height, 0:width]
    files = {"list_eval_partition.csv": b"image_id,partition\n"}
    for i in range(1, count + 1):
        base = rng.uniform(0, 160, size=3)
        pixels = base + 60 * (y / height)[..., None] * rng.uniform(0.5, 1, size=3)
        radius = rng.uniform(30, 60)
        pixels[(x - width / 2) ** 2 + (y - height / 2) ** 2 < radius**2] = 250
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG", quality=95)
        files[f"{CELEBA_FOLDER}/{CELEBA_FOLDER}/{i:06d}.jpg"] = buffer.getvalue()
        files["list_eval_partition.csv"] += f"{i:06d}.jpg,0\n".encode()
    path = Path(path)
    if as_zip:
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w") as archive:
            for name, payload in files.items():
                archive.writestr(name, payload)
    else:
        for name, payload in files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(payload)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m ddpm_helpers.engine.celeba SOURCE OUT``: CelebA as a folder of PNGs."""
    parser = argparse.ArgumentParser(
        prog="python -m ddpm_helpers.engine.celeba",
        description="Crop and resize CelebA's aligned faces into a folder of PNGs for "
                    "--data folder:OUT. " + _layout_help())
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser) -> None:
    """The options of ``prepare-celeba`` (also ``python -m ddpm_helpers.engine.celeba``)."""
    parser.add_argument("source", help="Kaggle's archive.zip or the folder it unpacks to")
    parser.add_argument("out", help="folder for the PNGs, e.g. data/celeba32 (created; re-running resumes)")
    parser.add_argument("--size", type=int, default=32, help="side in pixels (default 32)")
    parser.add_argument("--crop", choices=CROPS, default="center",
                        help="center: central square (default); squash: whole face, "
                             "as the original tutorial")
    parser.add_argument("--limit", type=int, default=None, help="only the first N faces (N >= 1)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first damaged file (default: skip it and list it at the end)")


def run(args) -> int:
    """Prepare CelebA from parsed arguments; the exit status (130 after Ctrl-C)."""
    try:
        summary = prepare_celeba(args.source, args.out, args.size, crop=args.crop,
                                 limit=args.limit, progress_every=10_000, strict=args.strict)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except PreparationInterrupted as stop:
        print(f"\n{stop}", file=sys.stderr)
        return 130
    damaged = summary["damaged"]
    if damaged:
        shown = ", ".join(damaged[:10]) + (", ..." if len(damaged) > 10 else "")
        print(f"{len(damaged):,} damaged file(s) skipped: {shown} (--strict stops at the first)",
              file=sys.stderr)
    print(f"{summary['written']:,} faces written, {summary['skipped']:,} already there, "
          f"{summary['seconds']:.0f} s: train with --data folder:{summary['folder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
