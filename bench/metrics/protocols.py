"""Measurement protocols as frozen objects: a number without its protocol is not a result (DESIGN.md).

Names are what tables group by, e.g. `fid-tf-5k-celebahq128` (torch-fidelity, TF-exact resize, 5,000 samples,
CelebA-HQ 128 px reference statistics) and `fid-clean-5k-celebahq128` (clean-fid's PIL bicubic resize).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from bench.errors import BenchError

# backend token -> (library, resize mode, record metric)
FID_BACKENDS: dict[str, tuple[str, str, str]] = {
    "tf": ("torch-fidelity", "tf-exact", "fid"),  # TF1-compatible bilinear resize inside the network (primary)
    "clean": ("clean-fid", "clean", "clean_fid"),  # PIL bicubic resize on float images (second column)
}
_NAME = re.compile(r"^fid-(?P<backend>[a-z]+)-(?P<count>\d+(?:\.\d+)?k?)-(?P<dataset>[a-z_]+?)(?P<res>\d+)$")


def count_token(n: int) -> str:
    """5000 -> '5k', 50000 -> '50k', 2500 -> '2500'."""
    return f"{n // 1000}k" if n % 1000 == 0 and n >= 1000 else str(n)


def check_backend(backend: str) -> str:
    if backend not in FID_BACKENDS:
        raise BenchError(f"Unknown FID backend '{backend}'; choose {' or '.join(FID_BACKENDS)}.")
    return backend


@dataclass(frozen=True)
class FIDProtocol:
    backend: str  # "tf" (torch-fidelity) | "clean" (clean-fid)
    num_samples: int  # generated samples scored
    dataset: str  # reference data set (prepared by bench.data)
    res: int  # reference resolution in px

    def __post_init__(self) -> None:
        check_backend(self.backend)
        if self.num_samples < 2:
            raise BenchError(f"FID needs at least 2 samples, got {self.num_samples}.")

    @property
    def reference(self) -> str:
        return f"{self.dataset}{self.res}"

    @property
    def name(self) -> str:
        return f"fid-{self.backend}-{count_token(self.num_samples)}-{self.reference}"

    @property
    def library(self) -> str:
        return FID_BACKENDS[self.backend][0]

    @property
    def mode(self) -> str:
        return FID_BACKENDS[self.backend][1]

    @property
    def metric(self) -> str:
        return FID_BACKENDS[self.backend][2]

    def as_dict(self) -> dict[str, Any]:
        from bench.metrics.inception import FID_INCEPTION_SHA256, FID_INCEPTION_SOURCE

        return {
            "name": self.name,
            **asdict(self),
            "library": self.library,
            "mode": self.mode,
            "reference": self.reference,
            "inception": FID_INCEPTION_SOURCE,
            "inception_sha256": FID_INCEPTION_SHA256,
            "quantisation": "x*127.5+128, clamp, uint8 (once)",
            "statistics": "float64 mean and unbiased covariance; Tr sqrt(S1 S2) by symmetric eigen-decomposition",
        }

    def with_backend(self, backend: str) -> FIDProtocol:
        return FIDProtocol(backend, self.num_samples, self.dataset, self.res)


def parse_fid_protocol(name: str) -> FIDProtocol:
    """'fid-tf-5k-celebahq128' -> FIDProtocol('tf', 5000, 'celebahq', 128)."""
    m = _NAME.match(name)
    if not m:
        raise BenchError(f"FID protocol '{name}' is not of the form fid-<tf|clean>-<count>-<dataset><res>.")
    text = m["count"]
    count = float(text[:-1]) * 1000 if text.endswith("k") else float(text)
    if count != int(count):
        raise BenchError(f"FID protocol '{name}' has a fractional sample count.")
    return FIDProtocol(check_backend(m["backend"]), int(count), m["dataset"], int(m["res"]))


FEATURE_METRIC_TOKENS = {  # metric -> how its protocol name starts, with the parameter that changes it
    "kid": lambda p: "kid",
    "precision": lambda p: f"precision-k{p['k']}",
    "recall": lambda p: f"recall-k{p['k']}",
    "memorisation": lambda p: f"memorisation-q{round(100 * p['quantile']):02d}",
    "class_accuracy": lambda p: "class-accuracy-probe",  # a linear probe on the same features (reproduce/probe.py)
}


def feature_metric_protocol(metric: str, fid: FIDProtocol, **params: Any) -> dict[str, Any]:
    """The protocol of a metric on the same Inception features as `fid`, e.g. kid-tf-5k-celebahq128."""
    if metric not in FEATURE_METRIC_TOKENS:
        raise BenchError(f"Unknown feature metric '{metric}'; choose {', '.join(FEATURE_METRIC_TOKENS)}.")
    base = fid.as_dict()
    name = f"{FEATURE_METRIC_TOKENS[metric](params)}-{fid.name.removeprefix('fid-')}"
    return {**base, "name": name, "metric": metric, "parameters": params}
