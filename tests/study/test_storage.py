"""Opening a study's storage: workers that start together on one folder all get in."""

from __future__ import annotations

import threading
from pathlib import Path

from nas.study.storage import prepare_storage


def test_workers_preparing_one_folder_at_once_are_all_let_in(tmp_path: Path) -> None:
    # Each worker probes the folder before opening the database; a shared probe file let one
    # worker delete another's probe mid-check and refuse a writable folder (seen in CI).
    url = f"sqlite:///{tmp_path / 'runs' / 'S' / 'study.db'}"
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(200):
            try:
                prepare_storage(url)
            except BaseException as err:  # collected, asserted below
                errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert list((tmp_path / "runs" / "S").iterdir()) == []  # no probe left behind
