"""Writing output files so that a crash, a full disk or a refused run never leaves half a file."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from nas.errors import NasError, out_of_space

FILE_MODE = 0o666  # what `open()` creates before the umask: shared runs folders stay readable


def _umask() -> int:
    """This process's umask (read without changing it where Linux tells it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def check_writable(folder: Path, setting: str) -> None:
    """Refuse, in one line and before anything is written, a folder that cannot be created or
    written: its nearest existing ancestor must be a folder that takes a file (a probe that
    leaves nothing behind; as root, permissions alone say little)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NasError(
            f"cannot write {setting}={folder}: {existing} is a file; pass {setting}=DIR elsewhere"
        )
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise NasError(
            f"cannot write {setting}={folder}: {err.strerror}; pass {setting}=DIR elsewhere"
        ) from None


def file_mode() -> int:
    """The mode `open()` gives a new file here: 0666 less the umask."""
    return FILE_MODE & ~_umask()


def atomic_write(path: Path, data: str | bytes, *, setting: str = "runs_dir") -> None:
    """Write `data` via a temporary file, fsync and rename: a failed write (full disk, unwritable
    folder, a crash, Ctrl-C) never leaves a truncated file nor the temporary one, and the old file
    stays as it was. The file gets the mode `open()` would give it (0666 less the umask), not
    the 0600 of a temporary file. `setting` names the option that moves the folder elsewhere."""
    tmp: str | None = None
    payload = data.encode() if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), file_mode())
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NasError(out_of_space(path, setting)) from None
        raise NasError(
            f"cannot write {path}: {err.strerror}; free space or pick another {setting}=PATH"
        ) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
