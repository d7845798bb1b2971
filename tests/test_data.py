"""Data sets: synthetic generator properties, crops (closed forms), preparation (verification, atomicity, reuse),
class folders and labels, and the training set (flips, cached latents)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.config import DataConfig
from bench.data import (
    LatentDataset,
    load_prepared_images,
    load_training_data,
    make_source,
    prepare,
    resolve_data_path,
)
from bench.datasets.cache import remove_stale_temporaries
from bench.datasets.images import adm_center_crop, center_crop_resize, open_rgb
from bench.datasets.sources import FolderSource, read_class_titles, read_classes_file
from bench.datasets.synthetic import synthetic_image
from bench.errors import BenchError
from tests.test_autoencoders import tiny_kl_folder

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = Path(os.environ.get("BENCH_DATA_ROOT") or SHARED / "data")
CELEBA = DATA / "celebahq-5k-512"
IMAGENETTE = DATA / "imagenette-128"


def write_images(folder: Path, count: int, size: tuple[int, int] = (48, 40), seed: int = 0) -> list[Path]:
    """`count` random JPEGs of (width, height) `size` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"img{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def add_bad_files(folder: Path, good: Path) -> tuple[str, str]:
    """A JPEG cut in half and a text file named .jpg; returns their names."""
    data = good.read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    (folder / "notes.jpg").write_text("not an image\n")
    return "cut.jpg", "notes.jpg"


def box_down(a: np.ndarray, f: int) -> np.ndarray:
    c, h, w = a.shape
    return a.reshape(c, h // f, f, w // f, f).mean((2, 4))


# ---------------------------------------------------------------------------------------------------------------
# synthetic


def test_synthetic_is_deterministic_and_independent_of_size(tmp_path: Path) -> None:
    small, _, meta = load_prepared_images(DataConfig(res=16, synthetic_size=4), None, tmp_path, progress=False)
    large, _, _ = load_prepared_images(DataConfig(res=16, synthetic_size=6), None, tmp_path, progress=False)
    assert small.shape == (4, 3, 16, 16) and small.dtype == np.uint8 and meta["count"] == 4
    assert np.array_equal(small, large[:4]) and np.array_equal(small[1], synthetic_image(1, 16))
    assert not np.array_equal(large[0], large[1])


def test_synthetic_same_scene_at_every_resolution() -> None:
    for index in range(6):
        high = box_down(synthetic_image(index, 128).astype(float), 4)
        low = synthetic_image(index, 32).astype(float)
        assert np.corrcoef(high.ravel(), low.ravel())[0, 1] > 0.95


def test_synthetic_has_structure_at_several_scales() -> None:
    """Every level of a 3-band box pyramid carries visible detail (std above 1 grey level of 255)."""
    for index in range(6):
        img = synthetic_image(index, 64).astype(float)
        level = img
        for _ in range(3):
            coarse = box_down(level, 2)
            band = level - coarse.repeat(2, 1).repeat(2, 2)
            assert band.std() > 1.0
            level = coarse


def test_synthetic_classes_change_image_statistics() -> None:
    """Nearest-centroid on mean colour recognises the class far above chance (4 classes: 25%)."""
    classes, n = 4, 160
    features = np.stack([synthetic_image(i, 16, classes).astype(float).mean((1, 2)) for i in range(n)])
    labels = np.arange(n) % classes
    train, test = slice(0, 96), slice(96, n)
    centroids = np.stack([features[train][labels[train] == k].mean(0) for k in range(classes)])
    predicted = ((features[test][:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == labels[test]).mean() > 0.7


# ---------------------------------------------------------------------------------------------------------------
# crops


def _bands(height: int, width: int, side: int) -> Image.Image:
    """Green centre `width - 2*side` columns, red side bands."""
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    arr[:, :, 1] = 200
    arr[:, :side] = arr[:, width - side :] = (200, 0, 0)
    return Image.fromarray(arr)


def test_center_crop_resize_keeps_the_centred_square() -> None:
    out = center_crop_resize(_bands(40, 60, 10), 40)  # the 40x40 centre is all green
    assert out.shape == (40, 40, 3) and out.dtype == np.uint8
    assert (out == (0, 200, 0)).all()
    down = center_crop_resize(_bands(80, 120, 20), 16)
    assert np.abs(down.astype(int) - (0, 200, 0)).max() <= 1


def test_adm_center_crop_halves_then_bicubic_then_crops() -> None:
    # 400x200 -> box-halved to 200x100 (short side < 128) -> bicubic to 128x64 -> centre 64 columns.
    out = adm_center_crop(_bands(200, 400, 100), 64)
    assert out.shape == (64, 64, 3)
    assert np.abs(out[:, 2:-2].astype(int) - (0, 200, 0)).max() <= 2
    assert adm_center_crop(_bands(50, 80, 5), 64).shape == (64, 64, 3)  # upsamples small images


# ---------------------------------------------------------------------------------------------------------------
# folders, preparation


def test_resolve_data_path(tmp_path: Path) -> None:
    for name in ("celebahq-5k-512", "imagenette-128"):
        (tmp_path / name).mkdir()
    assert resolve_data_path(DataConfig(dataset="celebahq"), tmp_path) == tmp_path / "celebahq-5k-512"
    assert resolve_data_path(DataConfig(dataset="imagenet"), tmp_path) == tmp_path / "imagenette-128"
    assert resolve_data_path(DataConfig(dataset="imagenet", path=str(tmp_path)), None) == tmp_path
    with pytest.raises(BenchError, match="No folder starting with 'ffhq'"):
        resolve_data_path(DataConfig(dataset="ffhq"), tmp_path)
    with pytest.raises(BenchError, match="BENCH_DATA_ROOT"):
        resolve_data_path(DataConfig(dataset="celebahq"), None)
    with pytest.raises(BenchError, match="does not exist"):
        resolve_data_path(DataConfig(dataset="celebahq", path=str(tmp_path / "nope")), None)


def test_folder_preparation_is_recursive_idempotent_and_refreshes(tmp_path: Path) -> None:
    src = tmp_path / "faces"
    files = write_images(src / "a", 3) + write_images(src / "b" / "c", 2, size=(30, 50), seed=1)
    cfg = DataConfig(dataset="celebahq", res=16, path=str(src), autoencoder="pixel")
    folder = prepare(cfg, None, tmp_path / "cache", progress=False)
    images = np.load(folder / "images.npy")
    expected = np.stack([center_crop_resize(open_rgb(p), 16).transpose(2, 0, 1) for p in sorted(files)])
    assert np.array_equal(images, expected)
    stamp = (folder / "images.npy").stat().st_mtime_ns
    assert prepare(cfg, None, tmp_path / "cache", progress=False) == folder
    assert (folder / "images.npy").stat().st_mtime_ns == stamp  # reused, not rewritten
    write_images(src / "d", 1, seed=2)
    assert prepare(cfg, None, tmp_path / "cache", progress=False) == folder
    _, labels, meta = load_prepared_images(cfg, None, tmp_path / "cache", progress=False)
    assert meta["count"] == 6 and labels is None and meta["skipped"] == []
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [folder.name]  # no temporary left


def test_bad_files_are_all_named_and_nothing_is_written(tmp_path: Path) -> None:
    src = tmp_path / "faces"
    good = write_images(src, 3)
    bad = add_bad_files(src, good[0])
    cfg = DataConfig(dataset="celebahq", res=16, path=str(src), autoencoder="pixel")
    cache = tmp_path / "cache"
    with pytest.raises(BenchError) as err:
        prepare(cfg, None, cache, progress=False)
    assert all(name in str(err.value) for name in bad) and "2 unreadable" in str(err.value)
    assert list(cache.iterdir()) == []
    folder = prepare(cfg, None, cache, skip_bad=True, progress=False)
    _, _, meta = load_prepared_images(cfg, None, cache, progress=False)
    assert meta["count"] == 3 and np.load(folder / "images.npy").shape == (3, 3, 16, 16)
    assert [s.split(" ")[0] for s in meta["skipped"]] == sorted(bad)


def test_interrupted_preparation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "faces"
    write_images(src, 4)
    original = FolderSource.items

    def interrupted(self: FolderSource):  # two images, then Ctrl-C
        items = original(self)
        yield next(items)
        yield next(items)
        raise KeyboardInterrupt

    monkeypatch.setattr(FolderSource, "items", interrupted)
    cfg = DataConfig(dataset="celebahq", res=16, path=str(src), autoencoder="pixel")
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg, None, tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.undo()
    name = FolderSource(cfg, None).cache_name()
    dead = f".tmp-999999999@{socket.gethostname()}"  # a killed writer on this host (no such pid)
    (tmp_path / "cache" / f".{name}-x{dead}").mkdir()
    (tmp_path / "cache" / f".{name}-y.tmp-1@elsewhere").mkdir()  # another host's writer: left alone
    folder = prepare(cfg, None, tmp_path / "cache", progress=False)
    (folder / f".latents-x.npy{dead}").write_bytes(b"")
    remove_stale_temporaries(folder)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([folder.name, f".{name}-y.tmp-1@elsewhere"])
    assert sorted(p.name for p in folder.iterdir()) == ["images.npy", "meta.json"]


def test_large_folder_through_the_worker_pool(tmp_path: Path) -> None:
    from bench.datasets.images import POOL_MIN_FILES

    files = write_images(tmp_path / "faces", POOL_MIN_FILES + 2, size=(12, 10))
    cfg = DataConfig(dataset="celebahq", res=8, path=str(tmp_path / "faces"), autoencoder="pixel")
    images, _, meta = load_prepared_images(cfg, None, tmp_path / "cache", progress=False)
    assert meta["count"] == len(files)
    for i in (0, 100, len(files) - 1):
        assert np.array_equal(images[i], center_crop_resize(open_rgb(files[i]), 8).transpose(2, 0, 1))


def test_class_folders_labels_classes_file_and_nested_layout(tmp_path: Path) -> None:
    split = tmp_path / "imnet" / "train"
    write_images(split / "n02", 2)
    write_images(split / "n01" / "images", 3, seed=1)  # Tiny-ImageNet style: found recursively
    bad = add_bad_files(split / "n03", write_images(split / "n03", 1, seed=2)[0])
    cfg = DataConfig(dataset="imagenet", res=16, path=str(tmp_path / "imnet"), num_classes=3, autoencoder="pixel")
    cache = tmp_path / "cache"
    with pytest.raises(BenchError, match=r"n03/cut\.jpg"):
        prepare(cfg, None, cache, progress=False)
    prepare(cfg, None, cache, skip_bad=True, progress=False)
    _, labels, meta = load_prepared_images(cfg, None, cache, progress=False)
    assert meta["class_names"] == ["n01", "n02", "n03"] and labels.tolist() == [0, 0, 0, 1, 1, 2]
    assert len(meta["skipped"]) == len(bad)
    (tmp_path / "imnet" / "classes.tsv").write_text("wnid\tindex\tname\nn03\t0\tc\nn01\t1\ta\nn02\t2\tb\n")
    shutil.rmtree(split / "n03")
    write_images(split / "n03", 1, seed=3)
    _, labels, meta = load_prepared_images(cfg, None, cache, progress=False)
    assert meta["class_names"] == ["n03", "n01", "n02"] and labels.tolist() == [0, 1, 1, 1, 2, 2]
    unconditional = DataConfig(**{**cfg.__dict__, "num_classes": 0})
    assert load_prepared_images(unconditional, None, cache, progress=False)[1] is None
    with pytest.raises(BenchError, match=r"set data\.num_classes=3"):
        prepare(DataConfig(**{**cfg.__dict__, "num_classes": 1000}), None, cache)


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    write_images(tmp_path / "train" / "n01", 1)
    (tmp_path / "train" / "n02" / "images").mkdir(parents=True)
    with pytest.raises(BenchError, match=r"no images in .*: n02\."):
        prepare(
            DataConfig(dataset="imagenet", res=16, path=str(tmp_path)), None, tmp_path / "cache", encode_latents=False
        )


def test_celebahq_has_no_classes(tmp_path: Path) -> None:
    write_images(tmp_path / "faces", 1)
    with pytest.raises(BenchError, match="has no classes"):
        prepare(
            DataConfig(dataset="celebahq", res=16, path=str(tmp_path / "faces"), num_classes=2),
            None,
            tmp_path,
            encode_latents=False,
        )


@pytest.mark.skipif(not CELEBA.is_dir() or not IMAGENETTE.is_dir(), reason="no shared data")
def test_real_data_subsets(tmp_path: Path) -> None:
    for i in range(6):
        shutil.copy(CELEBA / f"{i}.jpg", tmp_path / f"{i}.jpg")
    images, _, meta = load_prepared_images(
        DataConfig(dataset="celebahq", res=32, path=str(tmp_path)), None, tmp_path / "cache", progress=False
    )
    assert images.shape == (6, 3, 32, 32) and meta["crop"] == "center"
    wnids = read_classes_file(IMAGENETTE / "classes.tsv")
    assert len(wnids) == 10 and wnids[0] == "n01440764"
    for wnid in wnids[:2]:
        (tmp_path / "inet" / "train" / wnid).mkdir(parents=True)
        for f in sorted((IMAGENETTE / "train" / wnid).iterdir())[:3]:
            shutil.copy(f, tmp_path / "inet" / "train" / wnid / f.name)
    cfg = DataConfig(dataset="imagenet", res=32, path=str(tmp_path / "inet"), num_classes=2)
    images, labels, meta = load_prepared_images(cfg, None, tmp_path / "cache", progress=False)
    assert images.shape == (6, 3, 32, 32) and labels.tolist() == [0, 0, 0, 1, 1, 1] and meta["crop"] == "adm"


# ---------------------------------------------------------------------------------------------------------------
# training set


def test_pixel_training_set_inverts_quantisation_and_flips(tmp_path: Path) -> None:
    cfg = DataConfig(dataset="synthetic", res=16, autoencoder="pixel", synthetic_size=8, num_classes=2)
    data = load_training_data(cfg, None, tmp_path, progress=False)
    images, _, _ = load_prepared_images(cfg, None, tmp_path, progress=False)
    assert isinstance(data, LatentDataset) and len(data) == 8 and data.num_classes == 2
    assert data.latents.dtype == torch.float32 and data.latents.abs().max() <= 1.0
    requantised = torch.floor(data.latents * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    assert torch.equal(requantised, torch.from_numpy(np.array(images)))  # harness quantisation is its inverse
    x, y = data.batch(torch.tensor([3, 4]), torch.tensor([True, False]))
    assert torch.equal(x[0], data.latents[3].flip(-1)) and torch.equal(x[1], data.latents[4])
    assert y.tolist() == [1, 0] and data.meta["weights_hash"] == "identity"
    no_flip = load_training_data(DataConfig(**{**cfg.__dict__, "flip": False}), None, tmp_path, progress=False)
    assert torch.equal(no_flip.batch(torch.tensor([3]), torch.tensor([True]))[0][0], data.latents[3])


def test_cached_latents_with_a_tiny_kl_autoencoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.autoencoders import load_autoencoder

    vae = tiny_kl_folder(tmp_path / "vae")
    cfg = DataConfig(dataset="synthetic", res=32, autoencoder="sd-vae-ft-mse", autoencoder_path=str(vae))
    cfg = DataConfig(**{**cfg.__dict__, "synthetic_size": 6})
    data = load_training_data(cfg, None, tmp_path / "cache", progress=False)
    ae = load_autoencoder("sd-vae-ft-mse", path=str(vae))
    images, _, _ = load_prepared_images(cfg, None, tmp_path / "cache", progress=False)
    x = torch.from_numpy(np.array(images)).float() / 127.5 - 1
    with torch.no_grad():
        torch.testing.assert_close(data.latents, ae.encode(x), atol=3e-3, rtol=1e-3)  # stored as float16
        torch.testing.assert_close(data.flipped, ae.encode(x.flip(-1)), atol=3e-3, rtol=1e-3)
    assert data.latents.shape == (6, 4, 4, 4) and data.meta["weights_hash"] == ae.weights_hash
    folder = Path(data.meta["folder"])
    assert (folder / f"latents-sd-vae-ft-mse-{ae.weights_hash[:8]}.json").is_file()
    z, _ = data.batch(torch.tensor([0, 1]), torch.tensor([True, False]))
    assert torch.equal(z[0], data.flipped[0]) and torch.equal(z[1], data.latents[1])

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("latents should come from the cache")

    monkeypatch.setattr("bench.datasets.cache.load_autoencoder", refuse)
    assert torch.equal(load_training_data(cfg, None, tmp_path / "cache", progress=False).latents, data.latents)
    monkeypatch.undo()
    fresh = load_training_data(DataConfig(**{**cfg.__dict__, "latent_cache": False}), None, tmp_path / "cache")
    torch.testing.assert_close(fresh.latents, data.latents, atol=3e-3, rtol=1e-3)


def test_missing_weights_fail_before_any_image_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("BENCH_WEIGHTS_ROOT", str(tmp_path / "weights"))
    with pytest.raises(BenchError, match="sd-vae-ft-mse"):
        load_training_data(DataConfig(res=32, synthetic_size=2), None, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_class_titles_come_from_the_name_column_in_label_order(tmp_path: Path) -> None:
    split = tmp_path / "inet" / "train"
    for wnid in ("n02", "n01"):
        write_images(split / wnid, 1)
    (tmp_path / "inet" / "classes.tsv").write_text("wnid\tindex\tname\nn02\t0\tgolden retriever\nn01\t1\ttench\n")
    cfg = DataConfig(dataset="imagenet", res=8, path=str(tmp_path / "inet"), num_classes=2, autoencoder="pixel")
    source = make_source(cfg, None)
    assert source.class_names == ["n02", "n01"] and source.class_titles == ["golden retriever", "tench"]
    (tmp_path / "inet" / "classes.tsv").write_text("wnid\tindex\nn02\t0\nn01\t1\n")  # no names: the wnids
    assert make_source(cfg, None).class_titles == ["n02", "n01"]
    assert read_class_titles(tmp_path / "inet" / "classes.tsv") == {}
