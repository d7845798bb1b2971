"""clean-fid FID of a run's last point in `bench reproduce mini` (the second column, DESIGN.md): the same decoded,
quantised samples as the tf metrics, through clean-fid's own PIL-bicubic resize and the same offline Inception.

The resize is the CPU cost (~6 ms a 128 px image on one core here; the network runs on the scoring device), so each
batch's images are resized on a thread pool as soon as the batch is decoded (Pillow and NumPy release the GIL),
while the GPU samples the next batches; their features are taken IN_FLIGHT batches later. The seconds this adds to
the point are the main thread's waits and network calls, printed and recorded.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from bench.reproduce.reference import Reference

IN_FLIGHT = 2  # resized batches held at once (a 500-image batch at 299 px is 0.5 GB of float32)
CLEAN_GUESS_S = 10.0  # seconds the clean-fid features add to a run's last point on a 16-core H200 host (a guess)


def resize_workers() -> int:
    """The CPU cores this process may use, less one for the main thread that drives the GPU."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


@dataclass
class CleanFeatures:
    """clean-fid features of a sample set, batch by batch: add() queues a batch's resize, finish() returns them."""

    reference: Reference  # the real images' clean-fid features (`mini-prepare --features --backend clean`)
    device: torch.device
    workers: int = field(default_factory=resize_workers)
    seconds: float = 0.0  # main-thread seconds spent here: what the features add to the point
    _net: object = None
    _resize: object = None  # clean-fid's PIL-bicubic resizer, built once
    _pool: ThreadPoolExecutor | None = None
    _pending: list[list[Future]] = field(default_factory=list)
    _features: list[Tensor] = field(default_factory=list)

    def setup(self) -> None:
        """The clean-fid Inception network, loaded once per command (verified weights, bench.metrics.inception)."""
        from cleanfid.resize import build_resizer

        from bench.metrics.inception import clean_extractor

        self._net, self._resize = clean_extractor(self.device), build_resizer("clean")

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="clean-resize")
        self._pending, self._features, self.seconds = [], [], 0.0

    def add(self, images: Tensor) -> None:
        """Queue the resize of uint8 [B, H, W, 3] images; take the features of batches beyond IN_FLIGHT."""
        tic = time.perf_counter()
        self._pending.append([self._pool.submit(self._resize, img) for img in images.cpu().numpy()])
        while len(self._pending) > IN_FLIGHT:
            self._take()
        self.seconds += time.perf_counter() - tic

    def finish(self) -> Tensor:
        """Features [N, 2048] (float32 on the device) of every added image, in order; the pool is shut down."""
        tic = time.perf_counter()
        try:
            while self._pending:
                self._take()
        finally:
            self._pool.shutdown(cancel_futures=True)
        self.seconds += time.perf_counter() - tic
        return torch.cat(self._features)

    def _take(self) -> None:
        # as bench.metrics.fid's clean extractor: the network called directly (cleanfid.fid imports `requests`)
        arr = np.stack([f.result() for f in self._pending.pop(0)])  # float32 [B, 299, 299, 3] in [0, 255]
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
        with torch.inference_mode():
            self._features.append(self._net(x.to(self.device)).float())

    def fid(self, features: Tensor) -> float:
        """FID of the samples' clean features against the reference's (float64 statistics, bench.metrics.fid)."""
        from bench.metrics.fid import FeatureStats, RefStats, fid_from_stats

        ref = self.reference
        ref_stats = RefStats(ref.mu.cpu().numpy(), ref.sigma.cpu().numpy(), ref.n, ref.meta)
        return fid_from_stats(FeatureStats.of(features.double().cpu().numpy()), ref_stats)
