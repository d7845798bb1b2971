"""The prepared-data cache and its atomic writes.

cache_dir/<dataset>-<res>-<hash8>/ holds
  images.npy   uint8 [N, 3, R, R]          labels.npy  int64 [N] (data sets with classes)
  meta.json    source hash (file list + sizes + mtimes + processing), count, classes, skipped files
  latents-<autoencoder>-<hash8>.npy (+ -flip.npy for the mirrored images) and latents-<autoencoder>-<hash8>.json
               (autoencoder name, full weights hash, source hash, shape, storage dtype).
The image folder is built in a hidden temporary folder and renamed into place; latent arrays go to temporary files
that are renamed, and their JSON (the commit marker) is written last. An interrupted or failed run leaves nothing
that a later run would trust.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.autoencoders import Autoencoder, get_spec, load_autoencoder, resolve_weights, weights_hash
from bench.config import DataConfig
from bench.datasets.sources import PREPARE_VERSION, Source
from bench.errors import BenchError
from bench.io import atomic_path, atomic_write_json

META = "meta.json"
LATENT_STORE_DTYPE = np.float16  # halves cache size (latents travel to the GPU machines); error ~5e-4 relative
ENCODE_PIXELS_PER_BATCH = 1 << 20  # images per encoder batch = this / res^2 (16 at 256 px): bounded memory on CPU
COPY_ROWS = 1024  # rows per chunk when copying memmaps
TEMP_TAG = re.compile(r"\.tmp-(?P<pid>\d+)@(?P<host>[^/]+)$")  # temporaries end with temp_tag()


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: dict) -> None:
    """Atomic (bench.io), its temporary named with temp_tag() so that a dead writer's leftover can be removed."""
    atomic_write_json(path, data, sort_keys=True, suffix=temp_tag())


def bad_files_message(bad: list[str], where: str) -> str:
    count = f"{len(bad)} unreadable or truncated image file{'s' if len(bad) > 1 else ''}"
    return f"{count} in '{where}': {', '.join(bad)}; fix or remove them, or prepare with --skip-bad to leave them out."


def prepare_images(source: Source, cache_dir: Path, skip_bad: bool, progress: bool) -> tuple[Path, dict]:
    """The prepared folder for `source`: reused when its meta matches the source's fingerprint, else rebuilt."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / source.cache_name()
    fingerprint = source.fingerprint()
    meta = read_json(final / META)
    if meta and meta.get("source_hash") == fingerprint and (final / "images.npy").is_file():
        return final, meta
    remove_stale_temporaries(cache_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", suffix=temp_tag(), dir=cache_dir))
    try:
        meta = _write_images(source, tmp, fingerprint, skip_bad, progress)
        _swap_in(tmp, final, fingerprint)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, read_json(final / META) or meta


def temp_tag() -> str:
    """Marks a temporary name with its writer (host and pid) so a later run can tell a dead writer's leftovers."""
    return f".tmp-{os.getpid()}@{socket.gethostname()}"


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporaries left in `folder` by killed processes of this host (caches may be shared across hosts)."""
    for path in folder.glob(".*.tmp-*"):
        match = TEMP_TAG.search(path.name)
        if match is None or match["host"] != socket.gethostname() or _alive(int(match["pid"])):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _write_images(source: Source, folder: Path, fingerprint: str, skip_bad: bool, progress: bool) -> dict:
    res = source.cfg.res
    path = folder / "images.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(source.count, 3, res, res))
    good: list[int] = []
    bad: list[str] = []
    where = str(source.root) if source.root is not None else source.cfg.dataset
    bar = tqdm(total=source.count, desc=f"prepare {source.cache_name()}", unit="img", disable=not progress)
    with contextlib.closing(source.items()) as items, bar:  # closing() stops the worker pool on any exit
        for index, (arr, reason) in enumerate(items):
            if reason is None:
                images[len(good)] = arr
                good.append(index)
            else:
                bad.append(f"{source.item_name(index)} ({reason})")
            bar.update()
    images.flush()
    del images
    if bad and not skip_bad:
        raise BenchError(bad_files_message(bad, where))
    if not good:
        raise BenchError(f"No readable images in '{where}'.")
    if bad:
        _truncate_rows(path, len(good))
    if source.labels is not None:
        np.save(folder / "labels.npy", source.labels[np.asarray(good, dtype=np.int64)])
    meta = {
        "prepare_version": PREPARE_VERSION,
        "dataset": source.cfg.dataset,
        "res": res,
        "count": len(good),
        "source": where,
        "source_hash": fingerprint,
        "crop": source.crop,
        "class_names": source.class_names,
        "class_titles": source.class_titles,  # readable names (grid labels)
        "skipped": bad,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(folder / META, meta)
    return meta


def _truncate_rows(path: Path, rows: int) -> None:
    """Rewrite an .npy keeping its first `rows` rows (only after skipping bad files)."""
    full = np.load(path, mmap_mode="r")
    short_path = path.with_name("short-" + path.name)
    short = np.lib.format.open_memmap(short_path, mode="w+", dtype=full.dtype, shape=(rows, *full.shape[1:]))
    for start in range(0, rows, COPY_ROWS):
        short[start : start + COPY_ROWS] = full[start : min(start + COPY_ROWS, rows)]
    short.flush()
    del short, full
    os.replace(short_path, path)


def _swap_in(tmp: Path, final: Path, fingerprint: str) -> None:
    """Rename the finished temporary folder into place (an outdated folder is moved aside, then removed)."""
    os.chmod(tmp, 0o755)
    if not final.exists():
        os.replace(tmp, final)
        return
    current = read_json(final / META)
    if current and current.get("source_hash") == fingerprint:
        return  # another process finished the same preparation first
    old = final.with_name(f".{final.name}-old{temp_tag()}")
    os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# latents


def latents_stem(cfg: DataConfig) -> tuple[str, str]:
    """(file stem 'latents-<name>-<hash8>', full weights hash) without loading the autoencoder."""
    digest = weights_hash(resolve_weights(get_spec(cfg.autoencoder), cfg.autoencoder_path))
    return f"latents-{cfg.autoencoder}-{digest[:8]}", digest


def prepare_latents(folder: Path, meta: dict, cfg: DataConfig, device: torch.device | str, progress: bool) -> dict:
    """Encode the prepared images once (and their mirror images when cfg.flip); returns the latents' marker."""
    stem, digest = latents_stem(cfg)
    marker_path = folder / f"{stem}.json"
    marker = read_json(marker_path)
    if (
        marker
        and marker.get("source_hash") == meta["source_hash"]
        and marker.get("weights_hash") == digest
        and (marker.get("flipped") or not cfg.flip)
        and all((folder / name).is_file() for name in marker["files"].values())
    ):
        return marker
    marker_path.unlink(missing_ok=True)
    remove_stale_temporaries(folder)
    ae = load_autoencoder(cfg.autoencoder, device, cfg.autoencoder_path)
    images = np.load(folder / "images.npy", mmap_mode="r")
    files = {"latents": f"{stem}.npy", **({"flipped": f"{stem}-flip.npy"} if cfg.flip else {})}
    for key, name in files.items():
        with atomic_path(folder / name, suffix=temp_tag()) as tmp:
            shape = (len(images), *_latent_dims(cfg))
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=LATENT_STORE_DTYPE, shape=shape)
            encode_images(ae, images, key == "flipped", device, out, progress)
            out.flush()
            del out
    marker = {
        "autoencoder": cfg.autoencoder,
        "weights_hash": digest,
        "source_hash": meta["source_hash"],
        "shape": [len(images), *_latent_dims(cfg)],
        "dtype": np.dtype(LATENT_STORE_DTYPE).name,
        "flipped": cfg.flip,
        "files": files,
        "encode": "posterior mean" if ae.spec.kind == "kl" else "deterministic",
    }
    write_json(marker_path, marker)
    return marker


def _latent_dims(cfg: DataConfig) -> tuple[int, int, int]:
    from bench.autoencoders import latent_shape

    return latent_shape(cfg.autoencoder, cfg.res)


def encode_images(
    ae: Autoencoder,
    images: np.ndarray,
    flip: bool,
    device: torch.device | str,
    out: np.ndarray | torch.Tensor,
    progress: bool = False,
) -> None:
    """Encode uint8 [N, 3, R, R] images (mirrored when `flip`) into `out` [N, C, h, w], batch by batch."""
    res = images.shape[-1]
    batch = max(1, ENCODE_PIXELS_PER_BATCH // (res * res))
    desc = f"encode {ae.spec.name}{' (flipped)' if flip else ''}"
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), batch), desc=desc, unit="batch", disable=not progress):
            chunk = torch.from_numpy(np.array(images[start : start + batch])).to(device)
            x = chunk.float().div_(127.5).sub_(1.0)
            z = ae.encode(x.flip(-1) if flip else x).float()
            if isinstance(out, torch.Tensor):
                out[start : start + len(chunk)] = z.to(out.device)
            else:
                out[start : start + len(chunk)] = z.cpu().numpy().astype(out.dtype)
