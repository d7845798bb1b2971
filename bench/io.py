"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

Every writer goes through `atomic_path`: a hidden temporary file in the destination's folder (the same file system,
so the rename is atomic), renamed onto the destination when the write succeeds and removed when it fails. Writers
that need a path (np.savez, safetensors' save_file, PIL's Image.save, tarfile) write to the path it yields; bytes,
text and JSON have their one-line helpers. The file gets `mode` whatever the writer created it with (mkstemp and
safetensors create 0600).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

FILE_MODE = 0o644  # results, reports, samples and carried files are read by other users and on other machines


@contextlib.contextmanager
def atomic_path(
    path: Path | str, mode: int = FILE_MODE, *, suffix: str = ".tmp", fsync: bool = False
) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it gets `mode` and replaces `path`, on failure it is removed.

    `suffix` ends the temporary name (np.save and np.savez append '.npy'/'.npz' to a path without them); the
    parent folder is created if needed; `fsync` flushes the file to disk before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path | str, write: Callable[[Path], object], mode: int = FILE_MODE, **options: Any) -> Path:
    """Call `write(tmp)` inside `atomic_path(path, mode, **options)`; returns `path`."""
    with atomic_path(path, mode, **options) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(
    path: Path | str, data: bytes, mode: int = FILE_MODE, *, suffix: str = ".tmp", fsync: bool = False
) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), mode, suffix=suffix, fsync=fsync)


def atomic_write_text(
    path: Path | str, text: str, mode: int = FILE_MODE, *, suffix: str = ".tmp", fsync: bool = False
) -> Path:
    """`text` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode(), mode, suffix=suffix, fsync=fsync)


def atomic_write_json(
    path: Path | str,
    data: Any,
    mode: int = FILE_MODE,
    *,
    indent: int | None = 1,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
    suffix: str = ".tmp",
    fsync: bool = False,
) -> Path:
    """`data` as JSON (json.dumps with these options) and a final newline."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, default=default) + "\n"
    return atomic_write_text(path, text, mode, suffix=suffix, fsync=fsync)
