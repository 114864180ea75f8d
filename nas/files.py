"""Writing output files so that a crash, a full disk or a refused run never leaves half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from nas.errors import NasError


def atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file, fsync and rename: a failed write (full disk, unwritable
    folder, a crash) never leaves a truncated file, and the old file stays as it was."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise NasError(
            f"cannot write {path}: {err.strerror}; free space or pick another runs_dir=PATH"
        ) from None
