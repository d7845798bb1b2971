"""bench.io: atomic writes replace the destination whole or not at all, with the requested mode."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from bench.io import atomic_path, atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_replace_the_file_with_mode_0644_and_leave_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.json"
    atomic_write_json(path, {"b": 1, "a": [1, 2]}, indent=2, sort_keys=True, fsync=True)
    assert path.read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2) + "\n"
    assert _mode(path) == 0o644  # mkstemp creates 0600
    atomic_write_text(path, "é\n", 0o600)
    assert path.read_bytes() == "é\n".encode() and _mode(path) == 0o600
    atomic_write_bytes(path, b"x")
    assert path.read_bytes() == b"x" and _mode(path) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_temporaries_are_hidden_beside_the_file_and_end_with_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "stats.npz"
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        np.savez(tmp, mu=np.zeros(3))  # appends .npz to a path without it: the suffix keeps the name

    assert atomic_write(path, write, suffix=".tmp.npz") == path
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".stats.npz.") and seen[0].name.endswith(".tmp.npz")
    assert np.load(path)["mu"].shape == (3,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.npz"]
