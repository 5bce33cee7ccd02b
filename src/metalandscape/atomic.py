"""Outputs that appear whole or not at all: write to a temporary file, then rename."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol


def _temporaries_of(path: Path) -> list[Path]:
    """The temporary files :func:`atomic_output` names for ``path`` (``.<name>.<8 chars>.tmp``,
    as ``tempfile.mkstemp`` draws them), left behind by a process killed while writing."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    try:
        return [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return []


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left as it was. The file gets
    the permissions a plain ``open(path, "w")`` would give (0666 less the umask). Temporaries of
    ``path`` that a killed earlier writer left are removed first (one writer per output, as
    under Snakemake).
    """
    path = Path(path)
    for stale in _temporaries_of(path):
        stale.unlink(missing_ok=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _naming(error, path) from error
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.errno is None or error.filename is not None:
            raise
        raise _naming(error, path) from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` reported against the output ``path`` (not a temporary name)."""
    return type(error)(error.errno, error.strerror, str(path))


class _NetCDFWritable(Protocol):
    def to_netcdf(self, *args: Any, **kwargs: Any) -> Any: ...


def write_netcdf_atomically(dataset: _NetCDFWritable, path: str | Path, **options: Any) -> Path:
    """Write an xarray Dataset to ``path`` (h5netcdf) whole or not at all.

    The file is built in memory and written with plain file I/O: a full disk or a read-only
    folder then raises a clean ``OSError``, where HDF5 writing to the file itself keeps failing
    from its finalizers and can crash the interpreter at exit.
    """
    data = dataset.to_netcdf(engine="h5netcdf", **options)
    with atomic_output(path) as temporary, open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    return Path(path)
