"""The writer: drains a run's bus into its database in batches (see :mod:`.loop`).

- :mod:`.loop`: the drain task, retries and reconnects, commit listeners, close and spill;
- :mod:`.rows`: pure row building from records, tied to ``store/columns.py``;
- :mod:`.encode`: safe, bounded JSON of captured values (truncation, redaction);
- :mod:`.spill`: spill files for rows the database never took, and their replay.
"""

from .loop import BatchWriter, CommitListener, FinishValues

__all__ = ["BatchWriter", "CommitListener", "FinishValues"]
