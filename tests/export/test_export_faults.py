"""SIGTERM during an export (SLURM's time limit, `kill`): the command stops as on Ctrl-C, leaves
no half-written model directory and no temporary folder, and the study is as it was."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from nas.config.compose import load_settings
from nas.search.run import run_search
from nas.study.storage import open_storage


def trials(url: str) -> list[tuple[int, str, tuple[float, ...]]]:
    study = optuna.load_study(study_name="E", storage=open_storage(url))
    return [(t.number, t.state.name, tuple(t.values or ())) for t in study.trials]


def stop_while_writing(args: list[str], out: Path) -> subprocess.CompletedProcess[str]:
    """Start `python -m nas.export ARGS`, SIGTERM it once it writes into `out`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nas.export", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if out.is_dir() and any(out.glob(".export-*/*")):  # files are being written
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("existing", [False, True], ids=["new-out", "force-into-old-out"])
def test_sigterm_during_an_export_leaves_no_partial_output(
    smoke_overrides: list[str], tiny: list[str], tmp_path: Path, existing: bool
) -> None:
    settings = load_settings([*smoke_overrides, *tiny, "study.name=E", "study.n_trials=1"])
    run_search(settings)
    before = trials(settings.study.storage)
    out = tmp_path / "models" / "e0"
    args = [f"runs_dir={settings.runs_dir}", "study.name=E", "trial=0", f"out={out}"]
    old = {"README.md": "an earlier export's card\n"} if existing else {}
    # The signal is sent once files appear in the temporary folder; now and then the export has
    # moved them in by the time Python runs the handler, and finishes whole. Such a try tests
    # nothing about the rollback, so the export is tried again (the output reset) until one is
    # stopped mid-write; every try must exit 130 with one line and leave whole output.
    for _ in range(4):
        shutil.rmtree(out.parent, ignore_errors=True)
        if existing:  # force=true into a folder that holds an earlier export: it stays whole
            out.mkdir(parents=True)
            (out / "README.md").write_text(old["README.md"])
        done = stop_while_writing([*args, *(["force=true"] if existing else [])], out)
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        assert not list(tmp_path.glob("models/**/.export-*")), "a temporary folder was left"
        assert trials(settings.study.storage) == before
        if out.is_dir() and (out / "nas_trial.json").is_file():  # finished before the signal
            assert (out / "README.md").read_text() != old.get("README.md"), "a mixed folder"
            # 130 as a rule; at the very end (handler restored) the default action: killed
            assert done.returncode in (130, 0, -signal.SIGTERM), done.stderr[-2000:]
            continue
        assert done.returncode == 130, done.stderr[-2000:]
        assert done.stderr.strip().splitlines()[-1] == "interrupted"
        if existing:
            assert {p.name: p.read_text() for p in out.iterdir()} == old
        else:
            assert not out.exists() and not out.parent.exists(), "an empty folder was left behind"
        return
    pytest.fail("every SIGTERM landed after the export had finished")


def test_a_signal_just_after_the_command_returned_is_an_interrupt_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nas import errors

    real = errors._run

    def late_signal(main, args):  # the handler runs after `main` has returned
        real(main, args)
        raise KeyboardInterrupt

    monkeypatch.setattr(errors, "_run", late_signal)
    with pytest.raises(SystemExit) as exit_info:
        errors.run_cli(lambda argv: 0, [])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_errors_logged_while_an_interrupt_unwinds_are_dropped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SQLAlchemy logs "Error closing cursor" with a traceback when the interrupt lands inside a
    fetch; the command says "interrupted" once instead. Other errors are still logged."""
    import logging

    from nas.cli import redact_logs

    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        redact_logs()
        log = logging.getLogger("sqlalchemy.pool.impl.QueuePool")
        for cause in (KeyboardInterrupt(), ValueError("a real one")):
            try:
                try:
                    raise cause
                except BaseException:  # the cleanup fails while `cause` unwinds: its context
                    raise RuntimeError("Cannot operate on a closed database.")  # noqa: B904
            except RuntimeError:
                log.error("Error closing cursor", exc_info=True)
    finally:
        root.removeHandler(handler)
    err = capsys.readouterr().err
    assert err.count("Error closing cursor") == 1 and "a real one" in err
    assert "KeyboardInterrupt" not in err


def test_an_interrupt_caught_inside_exec_still_exits_130(tmp_path: Path) -> None:
    """A SIGTERM whose handler runs inside `exec` of source text (dataclasses building a class
    while transformers imports) used to leave CPython's 'unhandled interrupt' mark set: the
    command printed "interrupted", then killed itself with SIGINT (-2)."""
    (tmp_path / "interrupted_in_exec.py").write_text(
        "from nas.errors import run_cli\n"
        "def main(argv):\n"
        "    exec('raise KeyboardInterrupt')\n"
        "run_cli(main)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-m", "interrupted_in_exec"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (130, "interrupted\n")


def _run_module(tmp_path: Path, name: str, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / f"{name}.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    return subprocess.run(
        [sys.executable, "-m", name], capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=60,
    )  # fmt: skip


def test_an_interrupt_in_a_weakref_callback_still_stops_the_command(tmp_path: Path) -> None:
    """Ctrl-C that lands in a weak-reference callback (SQLAlchemy's, during garbage collection)
    cannot propagate: Python printed "Exception ignored ... KeyboardInterrupt" and the search ran
    on to exit 0. It is delivered again, and the command stops as interrupted."""
    done = _run_module(tmp_path, "interrupted_in_callback", (
        "import time, weakref\n"
        "from nas.errors import run_cli\n"
        "class Thing: pass\n"
        "def interrupted(ref): raise KeyboardInterrupt\n"
        "def main(argv):\n"
        "    thing = Thing(); ref = weakref.ref(thing, interrupted); del thing\n"
        "    time.sleep(20)\n"
        "    print('ran on')\n"
        "run_cli(main)\n"
    ))  # fmt: skip
    assert (done.returncode, done.stderr, done.stdout) == (130, "interrupted\n", "")


def test_a_cleanup_that_fails_while_an_interrupt_unwinds_is_an_interrupt(tmp_path: Path) -> None:
    """Optuna's trial bookkeeping, cut by Ctrl-C mid-write, raises UnboundLocalError with the
    interrupt as its context: the command says "interrupted", not a bug's traceback."""
    done = _run_module(tmp_path, "cleanup_fails", (
        "from nas.errors import run_cli\n"
        "def main(argv):\n"
        "    try:\n"
        "        raise KeyboardInterrupt\n"
        "    finally:\n"
        "        [].pop()\n"
        "run_cli(main)\n"
    ))  # fmt: skip
    assert (done.returncode, done.stderr) == (130, "interrupted\n")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_during_the_moves_acts_after_them(signum: int) -> None:
    """The export's moves run under `interrupts_deferred`: with another thread alive (torch's,
    ONNX Runtime's), a signal sent mid-block still waits for the block's end."""
    from nas import errors

    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()  # a thread the kernel may pick
    # As under run_cli, in a terminal (a background job's shell starts Python with SIGINT ignored)
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, errors._interrupt),
    }
    finished = []
    try:
        with pytest.raises(KeyboardInterrupt), errors.interrupts_deferred():
            os.kill(os.getpid(), signum)
            start = time.monotonic()  # 0.2 s of bytecode, where Python runs a pending handler
            while time.monotonic() - start < 0.2:
                pass
            finished.append(True)
        assert finished == [True]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stop.set()
