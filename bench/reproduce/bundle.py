"""Bundles of a mini-benchmark command: everything it wrote as one .tar.gz, for GPU machines that return few files.

`write_bundle` packs the results files (paths relative to RESULTS, under results/) and the runs' logs (under
runs/<run>/); `ingest_bundle` (`bench reproduce mini-ingest`) checks every record strictly, then unpacks.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError
from bench.io import atomic_path, atomic_write_bytes


def write_bundle(path: Path, results: Path, files: list[Path], logs: list[Path]) -> None:
    """One .tar.gz: the written results files (paths relative to RESULTS) and run logs under runs/; atomic."""
    import tarfile

    with atomic_path(path) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for f in sorted(set(files)):
            tar.add(f, arcname=f"results/{f.relative_to(results).as_posix()}")
        for f in logs:
            tar.add(f, arcname=f"runs/{f.parent.name}/{f.name}")


def _read_members(bundle: Path) -> list[tuple[tuple[str, ...], bytes]]:
    """(path parts, bytes) of every file in the bundle; refuses paths outside results/ and runs/."""
    import tarfile

    out = []
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            for m in tar.getmembers():
                parts = Path(m.name).parts
                if not m.isfile():
                    continue
                if ".." in parts or Path(m.name).is_absolute() or parts[0] not in ("results", "runs"):
                    raise BenchError(f"Bundle '{bundle}' holds an unexpected path '{m.name}'; nothing was unpacked.")
                out.append((parts, tar.extractfile(m).read()))
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise BenchError(f"'{bundle}' is not a readable mini-benchmark bundle ({exc}).") from None
    return out


def _is_record(path: Path) -> bool:
    from bench.results import NON_RECORD_FOLDERS

    return path.suffix == ".json" and not set(path.parts) & set(NON_RECORD_FOLDERS)


def ingest_bundle(bundle: Path, results: Path, runs: Path | None = None) -> list[Path]:
    """Unpack a bundle: results/ members into RESULTS (every record read back strictly first), runs/ into RUNS."""
    import tempfile

    from bench.results import read_record

    staged = [
        (Path(results if parts[0] == "results" else runs, *parts[1:]), data)
        for parts, data in _read_members(bundle)
        if parts[0] == "results" or runs is not None
    ]
    for dest, data in staged:  # another training run of the same name stops the ingest before anything is written
        _check_same_budget(dest, data, bundle)
    with tempfile.TemporaryDirectory() as tmp:
        for dest, data in staged:  # a bad record stops the ingest before anything is written
            if _is_record(dest):
                probe = Path(tmp) / dest.name
                probe.write_bytes(data)
                read_record(probe)
    written = []
    for dest, data in staged:
        written.append(atomic_write_bytes(dest, data))
    return written


def _budget(config_yaml: bytes) -> object:
    import yaml

    try:
        return (yaml.safe_load(config_yaml) or {}).get("train", {}).get("total_images")
    except (yaml.YAMLError, AttributeError):
        return None


def _check_same_budget(dest: Path, data: bytes, bundle: Path) -> None:
    """A run folder's logs are replaced only by the same training run continued (same budget in images): a run of
    the same name trained to another budget (e.g. 4x) would overwrite the other run's stats.jsonl and config."""
    if dest.name != "config.yaml" or not dest.is_file():
        return
    old, new = _budget(dest.read_bytes()), _budget(data)
    if old is not None and new is not None and old != new:
        raise BenchError(
            f"'{dest.parent}' holds a run trained to {old} images and bundle '{bundle}' one of the same name trained "
            f"to {new}; pass another --runs folder (e.g. '{dest.parent.parent}-{new}'); nothing was unpacked."
        )
