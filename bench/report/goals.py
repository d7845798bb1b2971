"""The performance goals table: measured records beside their thresholds and the anchors they are judged by.

Anchors (results/anchors/performance.json) are numbers measured elsewhere (the official LFM code on one H100, the
paper's latency); a goal row says which GPU gave the measured number, so a comparison across GPUs is visible as
such. Goal records carry their own threshold (`extra.goal`, `extra.met`, bench.perf.goals); training throughput is
judged here, against the anchor (2x the official code) and against LFM's newest record under the same protocol.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import registry
from bench.errors import BenchError
from bench.report.tables import Cell, Loaded, Table, fmt_sig, method_label, newest_by
from bench.results import Record

ANCHORS_FILE = Path("anchors") / "performance.json"
METHOD, REFERENCE = registry.method(), registry.reference()  # LapFlow and LFM
TRAIN_PRESETS = {f.name: f"{f.name}-celebahq256-l2" for f in (REFERENCE, METHOD)}
TRAIN_SPEEDUP = 2.0  # goal: >= 2x the official code's images/s (its anchor)
FORWARD_ANCHORS = {  # (family, call, batch) of a profiled forward -> anchor id
    (REFERENCE.name, "dit-256tok", 64): "forward-official-b64-bf16",
    (REFERENCE.name, "dit-256tok", 1): "forward-official-b1-bf16",
    (METHOD.name, "segment1-320tok", 64): f"forward-public-{METHOD.name}-b64-bf16",
}
GOAL_LABELS = {
    "sampler_time_ratio": f"Sampler time vs {REFERENCE.label}, equal NFE",
    "time_e2e": "Batch-1 end to end (decode included)",
    "train_loss_match": "Compiled loss curve = eager",
    "fid_wall": "FID-5k at 128 px on this CPU",
}
MODEL_FREE = {"fid_wall", "fid_feature_throughput"}
HEADERS = ["What", "Method", "Res", "Protocol", "GPU", "Measured", "Unit", "Threshold", "Anchor", "Met", "Notes"]


def load_anchors(results_dir: Path) -> dict[str, dict[str, Any]]:
    path = Path(results_dir) / ANCHORS_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text())["anchors"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"Anchor file '{path}' is not valid ({exc}).") from None


def _gpu(record: Record) -> str:
    return str(record.environment.get("gpu") or "cpu")


def _newest_by(items: list[Loaded], key: Any) -> list[Loaded]:
    return [item for _, item in sorted(newest_by(items, key).items(), key=lambda kv: str(kv[0]))]


def _num(value: float | None) -> Cell:
    return Cell("-" if value is None else fmt_sig(value), value)


def _anchor_text(anchors: dict[str, dict[str, Any]], key: str) -> str:
    a = anchors.get(key)
    return f"{fmt_sig(a['value'])} {a['unit']} ({a['gpu']})" if a else "-"


def _met(met: bool | None) -> Cell:
    return Cell({True: "yes", False: "no", None: "-"}[met])


def _row(goal: str, item: Loaded, value: float | None, unit: str, threshold: str, anchor: str, met: bool | None,
         notes: str) -> list[Cell]:  # fmt: skip
    r = item.record
    method = "(any)" if r.metric in MODEL_FREE else method_label(r.model)  # scored images, not a model
    label = [Cell(goal), Cell(method), Cell(str(r.resolution)), Cell(r.protocol_name)]
    return [*label, Cell(_gpu(r)), _num(value), Cell(unit), Cell(threshold), Cell(anchor), _met(met), Cell(notes)]


def _threshold(extra: dict[str, Any]) -> str:
    g = extra.get("goal") or {}
    return f"{g.get('direction', '')} {fmt_sig(g['threshold'])}" if "threshold" in g else "-"


def _training_rows(records: list[Loaded], anchors: dict[str, dict[str, Any]]) -> list[tuple[Loaded, list[Cell]]]:
    train = [i for i in records if i.record.metric == "train_throughput" and i.record.preset in TRAIN_PRESETS.values()]
    chosen = _newest_by(train, lambda r: (r.preset, r.protocol_name, _gpu(r)))
    ref = {(i.record.protocol_name, _gpu(i.record)): i.record.value for i in chosen if i.record.model == REFERENCE.name}
    official = anchors.get("train-official-b64-bf16", {}).get("value")
    rows = []
    for item in chosen:
        r = item.record
        mfu = r.extra.get("mfu")
        notes = f"MFU {mfu:.3f}" if isinstance(mfu, float) else ""
        if r.model == REFERENCE.name:
            target = TRAIN_SPEEDUP * official if official else None
            met = None if target is None or r.value is None else r.value >= target
            threshold = f">= {fmt_sig(target)} (2x anchor)" if target else "-"
            anchor = _anchor_text(anchors, "train-official-b64-bf16")
        else:
            target = ref.get((r.protocol_name, _gpu(r)))
            met = None if target is None or r.value is None else r.value >= target
            threshold = f">= {fmt_sig(target)} ({REFERENCE.label}, same protocol)" if target else "-"
            anchor = "-"
        rows.append((item, _row("Training images/s, batch 64", item, r.value, r.unit, threshold, anchor, met, notes)))
    return rows


def _goal_record_rows(records: list[Loaded], anchors: dict[str, dict[str, Any]]) -> list[tuple[Loaded, list[Cell]]]:
    goals = [i for i in records if "goal" in i.record.extra and i.record.metric in GOAL_LABELS]
    rows = []
    for item in _newest_by(goals, lambda r: (r.metric, r.model, r.resolution, r.protocol_name, _gpu(r))):
        r, extra = item.record, item.record.extra
        notes = []
        if "flop_ratio" in extra:
            per_flop = extra["time_per_flop_vs_lfm"]  # the record's field name
            notes.append(f"FLOP ratio {extra['flop_ratio']:.3f}; time per FLOP {per_flop:.2f}x {REFERENCE.label}")
        if extra.get("max_abs_diff_vs_eager"):
            notes.append(f"max |fast - eager| {extra['max_abs_diff_vs_eager']:.2g}")
        if "nfe" in r.protocol:
            notes.append(f"NFE {r.protocol['nfe']}")
        anchor = _anchor_text(anchors, f"latency-paper-{METHOD.name}-256") if r.metric == "time_e2e" else "-"
        rows.append((item, _row(GOAL_LABELS[r.metric], item, r.value, r.unit, _threshold(extra), anchor,
                                extra.get("met"), "; ".join(notes))))  # fmt: skip
    return rows


def _context_rows(records: list[Loaded], anchors: dict[str, dict[str, Any]]) -> list[tuple[Loaded, list[Cell]]]:
    """Measurements without a threshold of their own: profiled forwards (beside the official/public forwards),
    the reference's batch-1 latency at its paper NFE (beside the official estimate) and Inception throughput on the
    GPU."""
    rows = []
    busy = [i for i in records if i.record.metric == "gpu_busy"]
    for item in _newest_by(busy, lambda r: (r.model, r.protocol_name, r.protocol.get("call", ""), _gpu(r))):
        r = item.record
        call = r.protocol.get("call")
        key = FORWARD_ANCHORS.get((r.model, call, r.protocol["batch"])) if call else None
        what = "Network forward (eager, profiled)" if call else "Training step (profiled)"
        notes = f"{call + ', ' if call else ''}batch {r.protocol['batch']}; GPU busy {fmt_sig(r.value or 0)}"
        anchor = _anchor_text(anchors, key) if key else "-"
        rows.append((item, _row(what, item, r.extra["wall_s"], "s", "-", anchor, None, notes)))
    ref_b1 = [i for i in records if i.record.metric == "time_e2e" and i.record.model == REFERENCE.name
              and i.record.protocol.get("nfe") == REFERENCE.paper_nfe]  # fmt: skip
    for item in _newest_by(ref_b1, lambda r: (r.protocol_name, _gpu(r))):
        anchor = _anchor_text(anchors, f"latency-official-{REFERENCE.name}-b1")
        nfe = f"NFE {REFERENCE.paper_nfe}"
        rows.append((item, _row(GOAL_LABELS["time_e2e"], item, item.record.value, "s", "-", anchor, None, nfe)))
    fid = [i for i in records if i.record.metric == "fid_feature_throughput"]
    for item in _newest_by(fid, lambda r: (r.protocol_name, _gpu(r))):
        r = item.record
        notes = f"{r.protocol.get('weights')} weights; {fmt_sig(r.extra['seconds_per_5k'])} s per 5k images"
        rows.append((item, _row("Inception features", item, r.value, r.unit, "-", "-", None, notes)))
    return rows


def goals_table(records: list[Loaded], results_dir: Path) -> Table | None:
    anchors = load_anchors(results_dir)
    pairs = _training_rows(records, anchors) + _goal_record_rows(records, anchors) + _context_rows(records, anchors)
    if not pairs:
        return None
    notes = [
        "Anchors were measured on the GPU named beside them; compare across GPUs with care (H200: same bf16 peak "
        "as H100, 1.4x the memory bandwidth).",
        f"Sampler ratios: {METHOD.label} over {REFERENCE.label} at equal Euler NFE and batch (64/16/4 at 256/512/1024 "
        "px); the FLOP ratio is the floor an equally efficient implementation would reach.",
    ]
    table = Table("performance-goals", "Performance goals", HEADERS, [row for _, row in pairs], "lllrllrllll", notes)
    table.used = table.placed = [item for item, _ in pairs]
    return table
