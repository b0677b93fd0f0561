"""pandas DataFrames of read results (pandas is the ``[pandas]`` extra, never a core dependency)."""

from __future__ import annotations

from typing import Any


def to_frame(rows: list[dict[str, Any]]) -> Any:
    """``rows`` (dicts of one shape) as a DataFrame, columns in the dicts' order.

    Raises:
        ImportError: pandas is not installed, with the command that installs it.
    """
    try:
        import pandas as pd  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise ImportError("frame() needs pandas: pip install 'cmbagent-events[pandas]' (or pip install pandas)"
                          ) from None
    columns = list(rows[0]) if rows else None
    return pd.DataFrame.from_records(rows, columns=columns)
