"""The writer: drains a run's bus into its database in batches (see :mod:`.loop`).

- :mod:`.loop`: the drain task, retries and reconnects, close and spill;
- :mod:`.listeners`: commit listeners (live subscribers see each committed batch);
- :mod:`.faults`: a full disk and refused rows (the batch split until only they are left out);
- :mod:`.fallbacks`: spill files (at the close, on a full disk) and a replaced SQLite file;
- :mod:`.rows`: rows from records, column by column, tied to ``store/columns.py``;
- :mod:`.encode`: safe, bounded JSON of captured values (truncation, redaction);
- :mod:`.spill`: spill files for rows the database never took, and their replay;
- :mod:`.handoff`: records as bytes for a writer in another process (``run/writer_process.py``).
"""

from .fallbacks import FinishValues
from .listeners import CommitListener
from .loop import BatchWriter, RunWriter

__all__ = ["BatchWriter", "CommitListener", "FinishValues", "RunWriter"]
