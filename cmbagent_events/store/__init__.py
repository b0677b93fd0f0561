"""SQL storage: the column spec, models, placement, schema migration, batch sinks, readers.

Import from the module that defines a name (``store.models``, ``store.database``, ...): the capture
path loads only ``schema`` and ``sink`` (no SQLAlchemy); models, repositories and engines bring it in.
"""
