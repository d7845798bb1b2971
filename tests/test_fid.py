"""FID: closed forms, agreement with the libraries' own formulas, statistics, weights integrity, backends, sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.errors import BenchError
from bench.metrics import fid, fid_sources, inception
from bench.metrics.protocols import FIDProtocol, parse_fid_protocol
from tests.conftest import requires_shared_data


@pytest.fixture(scope="module")
def inception_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One converted copy of the Inception weights for the whole module."""
    folder = tmp_path_factory.mktemp("fid-cache")
    inception.converted_weights(folder)
    return folder


def gaussian_features(n: int, d: int, seed: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * scale + shift


# ----------------------------------------------------------------------------------------------------------------
# Fréchet distance and statistics


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_matches_closed_form_for_commuting_covariances(method: str) -> None:
    # S1 = Q diag(a) Q^T and S2 = Q diag(b) Q^T commute: Tr sqrt(S1 S2) = sum sqrt(a b).
    rng = np.random.default_rng(0)
    d = 32
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    got = fid.frechet_distance(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T, method=method)
    assert got == pytest.approx(expected, rel=1e-6)
    assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_agrees_with_torch_fidelity_and_clean_fid() -> None:
    from cleanfid.fid import frechet_distance as clean_frechet
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    x, y = gaussian_features(400, 48, 1), gaussian_features(400, 48, 2, scale=1.2, shift=0.1)
    m1, s1, m2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    ours = fid.frechet_distance(m1, s1, m2, s2)
    tf_value = fid_statistics_to_metric({"mu": m1, "sigma": s1}, {"mu": m2, "sigma": s2}, False)
    assert ours == pytest.approx(tf_value["frechet_inception_distance"], rel=1e-9)
    assert ours == pytest.approx(clean_frechet(m1, s1, m2, s2), rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero() -> None:
    stats = fid.FeatureStats.of(gaussian_features(300, 64, 3))
    mu, sigma = stats.mean_cov()
    assert abs(fid.fid_from_stats(stats, fid.RefStats(mu, sigma, stats.n))) < 1e-8


def test_feature_stats_equal_numpy_and_do_not_depend_on_batching() -> None:
    x = gaussian_features(101, 16, 4, scale=2.0, shift=5.0)
    whole = fid.FeatureStats.of(x)
    chunked = fid.FeatureStats(16)
    for i in range(0, len(x), 7):
        chunked.update(x[i : i + 7])
    for stats in (whole, chunked):
        mu, sigma = stats.mean_cov()
        np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)
        assert stats.n == 101


def test_statistics_refuse_bad_input() -> None:
    with pytest.raises(BenchError, match="at least 2 samples"):
        fid.FeatureStats.of(gaussian_features(1, 8, 0)).mean_cov()
    with pytest.raises(BenchError, match="NaN"):
        fid.FeatureStats.of(np.full((3, 8), np.nan))
    with pytest.raises(BenchError, match="disagree in shape"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# ----------------------------------------------------------------------------------------------------------------
# Inception weights


def test_pinned_hash_matches_the_installed_file() -> None:
    path = inception.verify_weights()
    assert path.name == "default_1.pt"
    assert inception.sha256_file(path) == inception.FID_INCEPTION_SHA256


def test_wrong_hash_weights_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the FID Inception network")
    with pytest.raises(BenchError, match=r"sha256 .* refused"):
        inception.verify_weights(fake)
    monkeypatch.setenv(inception.FID_INCEPTION_ENV, str(fake))
    with pytest.raises(BenchError, match="refused"):
        inception.load_torchscript()
    with pytest.raises(BenchError, match="do not exist"):
        inception.verify_weights(tmp_path / "missing.pt")


def test_conversion_covers_every_parameter_and_has_no_classifier(inception_cache: Path) -> None:
    path = inception.converted_weights(inception_cache)
    state = torch.load(path, weights_only=True)
    assert len(inception.conv_name_map()) == 94
    net = inception.tf_extractor("cpu", inception_cache)  # loads the state dict strictly
    assert set(net.state_dict()) == set(state)
    assert torch.isnan(state["fc.weight"]).all() and torch.isnan(state["fc.bias"]).all()
    assert all(torch.equal(v, torch.ones_like(v)) for k, v in state.items() if k.endswith("bn.weight"))
    assert path.with_suffix(".json").is_file()
    # Reused, not reconverted, while the recorded hash matches.
    mtime = path.stat().st_mtime_ns
    assert inception.converted_weights(inception_cache) == path and path.stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_torch_fidelity_and_clean_fid_features_agree(inception_cache: Path) -> None:
    # At 299 px both resizes are the identity, so this compares the converted network with the TorchScript one.
    images = torch.randint(0, 256, (3, 299, 299, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    tf_features = fid.make_extractor("tf", "cpu", inception_cache)(images)
    clean_features = fid.make_extractor("clean", "cpu", inception_cache)(images)
    assert tf_features.shape == (3, 2048)
    np.testing.assert_allclose(tf_features, clean_features, rtol=0, atol=1e-5 * np.abs(tf_features).max())


@pytest.mark.slow
def test_fid_statistics_do_not_depend_on_batch_size(inception_cache: Path) -> None:
    images = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    one, _ = fid.compute_stats(fid.rebatch([images], 1), ["tf"], "cpu", inception_cache)
    four, _ = fid.compute_stats(fid.rebatch([images], 4), ["tf"], "cpu", inception_cache)
    (mu1, s1), (mu4, s4) = one["tf"].mean_cov(), four["tf"].mean_cov()
    np.testing.assert_allclose(mu1, mu4, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s1, s4, rtol=1e-4, atol=1e-6)
    # Same statistics give FID 0 on a few dims (a full 2048-d sqrt on 2 CPU cores takes seconds).
    assert abs(fid.frechet_distance(mu1[:64], s1[:64, :64], mu4[:64], s4[:64, :64])) < 1e-5


# ----------------------------------------------------------------------------------------------------------------
# reference statistics, protocols, sources


def test_protocol_names_round_trip() -> None:
    p = FIDProtocol("tf", 5000, "celebahq", 128)
    assert p.name == "fid-tf-5k-celebahq128" and p.metric == "fid" and p.mode == "tf-exact"
    assert parse_fid_protocol("fid-clean-50k-imagenet256") == FIDProtocol("clean", 50000, "imagenet", 256)
    assert parse_fid_protocol("fid-tf-2500-celebahq128").num_samples == 2500
    assert p.with_backend("clean").metric == "clean_fid"
    with pytest.raises(BenchError, match="not of the form"):
        parse_fid_protocol("fid-5k")
    with pytest.raises(BenchError, match="Unknown FID backend"):
        parse_fid_protocol("fid-torch-5k-celebahq128")


def test_reference_stats_are_cached_and_follow_the_source_hash(
    inception_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.data

    images = np.random.default_rng(0).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    source = {"hash": "a"}
    calls: list[int] = []
    real_compute = fid.compute_stats
    projection = np.random.default_rng(1).standard_normal((3, 2048))

    def cheap_extractor(backend: str, device: object = "cpu", cache_dir: object = None) -> object:
        # The caching logic is under test here, not the network: mean colour, projected to 2048 dims.
        return lambda x: x.double().mean(dim=(1, 2)).numpy() @ projection

    def fake_load(cfg: object, data_root: object, cache_dir: object, progress: bool = True) -> tuple:
        return images, None, {"source_hash": source["hash"]}

    def counting_compute(*args: object, **kwargs: object) -> tuple:
        calls.append(1)
        return real_compute(*args, **kwargs)

    monkeypatch.setattr(bench.data, "load_prepared_images", fake_load)
    monkeypatch.setattr(fid, "compute_stats", counting_compute)
    monkeypatch.setattr(fid, "make_extractor", cheap_extractor)
    paths = fid.reference_stats("celebahq", 32, ["tf"], cache_dir=inception_cache, progress=False)
    ref = fid.resolve_ref("celebahq32", "tf", inception_cache)
    assert ref.n == 3 and ref.meta["source_hash"] == "a" and ref.meta["dataset"] == "celebahq"
    fid.reference_stats("celebahq", 32, ["tf"], cache_dir=inception_cache, progress=False)
    assert len(calls) == 1  # cached
    source["hash"] = "b"
    fid.reference_stats("celebahq", 32, ["tf"], cache_dir=inception_cache, progress=False)
    assert len(calls) == 2 and fid.load_stats(paths["tf"]).meta["source_hash"] == "b"
    with pytest.raises(BenchError, match="computed with backend 'tf'"):
        fid.resolve_ref(str(paths["tf"]), "clean")
    with pytest.raises(BenchError, match="bench eval ref-stats"):
        fid.resolve_ref("celebahq64", "tf", inception_cache)


def test_folder_source_reads_pngs_in_name_order(tmp_path: Path) -> None:
    arrays = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / f"{i:06d}.png")
    got = torch.cat(list(fid_sources.folder_batches(tmp_path, 3, 2)))
    assert torch.equal(got, torch.from_numpy(arrays))
    with pytest.raises(BenchError, match="holds 3 PNG files"):
        list(fid_sources.folder_batches(tmp_path, 4, 2))


def test_latents_folder_is_ordered_by_seed(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    z = torch.randn(4, 3, 4, 4)
    save_file({"latents": z[2:], "seeds": torch.tensor([2, 3])}, str(tmp_path / "latents-000002-000003.safetensors"))
    save_file({"latents": z[:2], "seeds": torch.tensor([0, 1])}, str(tmp_path / "latents-000000-000001.safetensors"))
    assert torch.equal(fid_sources.load_latents(tmp_path), z)

    class Identity:
        def decode(self, x: torch.Tensor) -> torch.Tensor:
            return x

    images = torch.cat(list(fid_sources.latent_batches(z.clamp(-1, 1), Identity(), 4, 3, torch.device("cpu"))))
    assert images.dtype == torch.uint8 and images.shape == (4, 4, 4, 3)
    with pytest.raises(BenchError, match="protocol needs 5"):
        list(fid_sources.latent_batches(z, Identity(), 5, 3, torch.device("cpu")))


def test_features_file_shape_is_checked(tmp_path: Path) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((4, 10), np.float32))
    with pytest.raises(BenchError, match=r"\[N, 2048\]"):
        fid_sources.load_features(tmp_path / "bad.npy")


@pytest.mark.slow
@requires_shared_data("imagenette-128")
def test_linear_probe_on_inception_features_separates_imagenette(inception_cache: Path) -> None:
    """50 train + 20 val images per class; softmax regression on tf features reaches >= 90% val accuracy."""
    from bench.datasets.images import list_images
    from tests.conftest import SHARED_DATA

    root = SHARED_DATA / "imagenette-128"
    classes = [line.split("\t")[0] for line in (root / "classes.tsv").read_text().splitlines()[1:]]
    extract = fid.make_extractor("tf", "cpu", inception_cache)

    def features(split: str, per_class: int) -> tuple[np.ndarray, np.ndarray]:
        feats, labels = [], []
        for label, wnid in enumerate(classes):
            files = list_images(root / split / wnid)[:per_class]
            imgs = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
            feats.append(extract(torch.from_numpy(imgs)))
            labels += [label] * len(files)
        return np.concatenate(feats), np.asarray(labels)

    x_train, y_train = features("train", 50)
    x_val, y_val = features("val", 20)
    accuracy = probe_accuracy(x_train, y_train, x_val, y_val)
    print(f"linear probe accuracy: {accuracy:.4f}")
    assert accuracy >= 0.9


def probe_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> float:
    """Multinomial logistic regression (L-BFGS, weight decay 1e-3) on standardised features."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xt = torch.tensor((x_train - mean) / std, dtype=torch.float64)
    xv = torch.tensor((x_val - mean) / std, dtype=torch.float64)
    yt = torch.tensor(y_train)
    linear = torch.nn.Linear(xt.shape[1], int(yt.max()) + 1, dtype=torch.float64)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(xt), yt) + 1e-3 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((linear(xv).argmax(1).numpy() == y_val).mean())
