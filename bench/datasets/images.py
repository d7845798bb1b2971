"""Reading, verifying and cropping image files (numpy + PIL only)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm")
RESIZE_REDUCING_GAP = 3.0  # Pillow: integer pre-reduction this far above the target is indistinguishable from exact
POOL_MIN_FILES = 256  # below this, a pool costs more than it saves
MAX_WORKERS = 2  # the development machines have 2 cores shared by several processes


def list_images(folder: Path) -> list[Path]:
    """Every image file under `folder` (recursive, by suffix, hidden files and folders skipped), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                found.append(Path(dirpath) / name)
    return sorted(found)


def open_rgb(path: Path) -> Image.Image:
    """Open and fully decode one file; truncated or non-image files raise (OSError / UnidentifiedImageError)."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # another library may have switched it on; truncation must fail here
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB")


def center_crop_resize(img: Image.Image, res: int) -> np.ndarray:
    """Largest centred square, antialiased Lanczos resize to res x res -> uint8 [res, res, 3]."""
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    square = img.crop((left, top, left + side, top + side))  # crop first: no pixel outside the square leaks in
    out = square.resize((res, res), Image.Resampling.LANCZOS, reducing_gap=RESIZE_REDUCING_GAP)
    return np.asarray(out, dtype=np.uint8)


def adm_center_crop(img: Image.Image, res: int) -> np.ndarray:
    """ADM's ImageNet crop (guided-diffusion `center_crop_arr`, also used by DiT): box-halve while the short side is
    at least 2*res, bicubic-resize the short side to res, then take the centred res x res window."""
    while min(img.size) >= 2 * res:
        img = img.resize((img.width // 2, img.height // 2), Image.Resampling.BOX)
    scale = res / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)
    top, left = (arr.shape[0] - res) // 2, (arr.shape[1] - res) // 2
    return arr[top : top + res, left : left + res]


def describe_error(exc: Exception) -> str:
    """A few words on why a file failed (the file name is added by the caller)."""
    if isinstance(exc, UnidentifiedImageError):
        return "not a readable image"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return "truncated" if "truncated" in text.lower() else text


def load_item(job: tuple[str, int, str]) -> tuple[np.ndarray | None, str | None]:
    """Worker: (path, res, crop) -> (uint8 [3, res, res], None) or (None, reason)."""
    path, res, crop = job
    try:
        img = open_rgb(Path(path))
        arr = adm_center_crop(img, res) if crop == "adm" else center_crop_resize(img, res)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return None, describe_error(exc)
    return np.ascontiguousarray(arr.transpose(2, 0, 1)), None


def load_items(files: Sequence[Path], res: int, crop: str) -> Iterator[tuple[np.ndarray | None, str | None]]:
    """load_item over files in order, on a small thread pool for big lists.

    Threads, not forked processes: Pillow releases the GIL while it decodes and resizes, and a process forked from
    one that runs other threads (torch's, tqdm's) can inherit a held lock; a forked worker once hung at exit that way
    during `mini-prepare`, stopping the command until it was killed.
    """
    jobs = [(str(p), res, crop) for p in files]
    workers = min(MAX_WORKERS, os.cpu_count() or 1)
    if len(jobs) < POOL_MIN_FILES or workers < 2:
        yield from map(load_item, jobs)
        return
    with ThreadPool(workers) as pool:
        yield from pool.imap(load_item, jobs, chunksize=16)
