"""Settings every dlt load of this project runs with."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dlt


@contextmanager
def load_settings(*, transient_files: bool = False) -> Iterator[None]:
    """Delete a load package's data files once they are loaded.

    dlt keeps them by default: a copy of every row of a first load (480 MB of parquet at a
    million accounts), then each night's changes, growing without end beside the warehouse that
    already holds the rows. The package's small state files stay; a failed package keeps its files.

    `transient_files`: the files only carry rows into the warehouse, so write them uncompressed
    (about twice the size until loaded; compressing took a fifth of a million-account extract).
    """
    values: dict[str, object] = {"load.delete_completed_jobs": True}
    if transient_files:
        values["data_writer.compression"] = "none"
    with dlt.config.values(values):
        yield
