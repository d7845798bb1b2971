"""What a training run writes as it goes: stats.jsonl rows every `log_every` images and one-off events (rank 0),
TensorBoard scalars when TensorBoard is installed, and a tqdm bar."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench.checkpoint import TrainState, truncate_stats
from bench.config import RunConfig
from bench.dist import DistInfo


def crossed(images: int, batch: int, every: int) -> bool:
    """Whether the step that brought `images` to this count crossed a multiple of `every` (0 = never)."""
    return every > 0 and images // every != (images - batch) // every


class TrainLogger:
    """stats.jsonl rows every `log_every` images (rank 0) and a labelled tqdm bar with its ETA.

    On resume, rows written after the checkpoint (and a half-written last line) are dropped first, so the file
    never repeats the steps that are trained again. When TensorBoard is installed (the `tensorboard` extra), the
    same rows also go to `<run dir>/tensorboard/` (x axis: images seen; events past a resume point are purged);
    stats.jsonl stays the record. One line on stderr says which.
    """

    def __init__(
        self, run_dir: Path, cfg: RunConfig, dist_info: DistInfo, state: TrainState, progress: bool, numerics: dict
    ) -> None:
        self.cfg, self.main, self.state = cfg, dist_info.is_main, state
        self.path = run_dir / "stats.jsonl"
        self.window: list[float] = []
        self.tic, self.tic_images = time.perf_counter(), state.images_seen
        self.board = self._board(run_dir, state.images_seen) if self.main else None  # its note precedes the bar
        self.bar = None
        if self.main and progress:
            from tqdm import tqdm

            total = cfg.train.total_images
            self.bar = tqdm(
                total=total, initial=min(state.images_seen, total), unit="img", desc="train", dynamic_ncols=True
            )
        if self.main:
            truncate_stats(self.path, state.images_seen)
            with open(self.path, "a") as f:
                f.write(json.dumps({"event": "start", "images": state.images_seen, "numerics": numerics}) + "\n")

    def event(self, name: str, **fields: object) -> None:
        """A one-off event row in stats.jsonl (rank 0), also printed: e.g. a compile fallback."""
        if not self.main:
            return
        print(f"note: {name}: {', '.join(f'{k} {v}' for k, v in fields.items())}", file=sys.stderr, flush=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"event": name, "images": self.state.images_seen, **fields}) + "\n")

    def step(self, loss: float, grad_norm: float, lr: float, finite: bool) -> None:
        if not self.main:
            return
        if finite:
            self.window.append(loss)
        b = self.cfg.train.batch_size
        if self.bar is not None:
            self.bar.update(b)
            self.bar.set_postfix(loss=f"{loss:.4f}")
        if crossed(self.state.images_seen, b, self.cfg.train.log_every):
            now = time.perf_counter()
            row = {
                "images": self.state.images_seen,
                "step": self.state.step,
                "loss": sum(self.window) / max(1, len(self.window)),
                "lr": lr,
                "grad_norm": grad_norm,
                "images_per_s": (self.state.images_seen - self.tic_images) / max(now - self.tic, 1e-9),
                "nonfinite_skipped": self.state.nonfinite_skipped,
            }
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
            if self.board is not None:
                for key in ("loss", "lr", "grad_norm", "images_per_s", "nonfinite_skipped"):
                    self.board.add_scalar(f"train/{key}", row[key], self.state.images_seen)
            self.window, self.tic, self.tic_images = [], now, self.state.images_seen

    @staticmethod
    def _board(run_dir: Path, images_seen: int) -> object | None:
        """A TensorBoard SummaryWriter in <run dir>/tensorboard, or None when TensorBoard is not installed."""
        import sys

        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print(
                "tensorboard: not installed, stats.jsonl only (pip install -e '.[tensorboard]')",
                file=sys.stderr,
                flush=True,
            )
            return None
        folder = run_dir / "tensorboard"
        print(f"tensorboard: logging to {folder} (tensorboard --logdir {run_dir.parent})", file=sys.stderr, flush=True)
        # On resume, TensorBoard drops the events at and after purge_step: the ones past the checkpoint's row.
        return SummaryWriter(str(folder), purge_step=images_seen + 1 if images_seen else None)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.board is not None:
            self.board.close()
