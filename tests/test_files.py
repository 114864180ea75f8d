"""Output files: written whole or not at all, with the mode `open()` gives (the umask), and a full
disk named in one line with the setting that moves the folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nas.errors import NasError
from nas.files import atomic_write


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "pareto.json", "{}")
        atomic_write(tmp_path / "ids.npy", b"\x93NUMPY")
    finally:
        os.umask(previous)
    for name in ("pareto.json", "ids.npy"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pareto.csv"
    path.write_text("old\n")

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C (or SIGTERM, which run_cli turns into it) mid-write

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, "new\n")
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "pareto.csv"
    ]


def test_an_unwritable_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file where a folder should be")
    with pytest.raises(NasError, match=r"cannot write .*plain/out/x.json: .*cache_dir=PATH"):
        atomic_write(tmp_path / "plain" / "out" / "x.json", "{}", setting="cache_dir")
