"""Files a code run creates or changes, found by comparing its work dir before and after (both
AG2 flavours): a bounded scan, and the file type a path is stored with."""

from __future__ import annotations

import os
from typing import Any

MAX_SCAN_ENTRIES = 5000  # work_dir entries compared before/after code execution

FILE_TYPES = {
    ".png": "plot", ".jpg": "plot", ".jpeg": "plot", ".svg": "plot", ".pdf": "plot", ".gif": "plot",
    ".py": "code", ".sh": "code", ".ipynb": "code", ".r": "code", ".jl": "code",
    ".csv": "data", ".json": "data", ".txt": "data", ".dat": "data", ".npy": "data", ".npz": "data",
    ".fits": "data", ".h5": "data", ".hdf5": "data", ".parquet": "data", ".tsv": "data", ".yaml": "data",
    ".md": "text", ".log": "log", ".tex": "text",
}


def file_type_for(path: str) -> str:
    return FILE_TYPES.get(os.path.splitext(path)[1].lower(), "other")


def snapshot(work_dir: Any) -> dict[str, tuple[int, int]] | None:
    """(mtime_ns, size) of the files under ``work_dir`` (bounded); None when there is no work_dir."""
    if work_dir is None:
        return None
    root = str(work_dir)
    if not os.path.isdir(root):
        return {}
    seen: dict[str, tuple[int, int]] = {}
    stack = [root]
    while stack and len(seen) < MAX_SCAN_ENTRIES:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        seen[entry.path] = (st.st_mtime_ns, st.st_size)
        except OSError:
            continue
    return seen
