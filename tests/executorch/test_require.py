"""Without ExecuTorch, everything that needs it says in one line how to install it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nas.errors import NasError, run_cli
from nas.executorch import runtime
from nas.executorch.runtime import INSTALL, REQUIRED, require


@pytest.fixture
def no_executorch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imports of ExecuTorch and of torchao's recipes fail as on a machine without the extra
    (None in sys.modules stops an import, whether or not the module was loaded before)."""
    for name in ("executorch", *REQUIRED):
        monkeypatch.setitem(sys.modules, name, None)


def test_the_message_is_the_one_line_the_issue_asks_for() -> None:
    assert INSTALL == "runtime=executorch needs ExecuTorch: pip install -e '.[executorch]'"


def test_require_raises_the_one_line(no_executorch: None) -> None:
    with pytest.raises(NasError) as err:
        require()
    assert str(err.value) == INSTALL


@pytest.mark.parametrize("module", REQUIRED)
def test_any_missing_part_is_the_same_line(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(NasError, match="pip install -e"):
        require()


def test_export_check_and_measure_stop_with_it(
    tiny_model, no_executorch: None, tmp_path: Path
) -> None:
    from nas.executorch.check import check_pte
    from nas.executorch.export import export_pte
    from nas.executorch.measure import measure_isolated

    pte = tmp_path / "x.pte"
    pte.write_bytes(b"")
    calls = [
        lambda: export_pte(tiny_model, tmp_path / "y.pte", context_len=8),
        lambda: export_pte(tiny_model, tmp_path / "y.pte", weight_bits=8, context_len=8),
        lambda: check_pte(pte, tiny_model, context_len=8),
        lambda: runtime.load_method(pte),
        lambda: measure_isolated(pte, threads=1),
    ]
    for call in calls:
        with pytest.raises(NasError) as err:
            call()
        assert str(err.value) == INSTALL
    assert not (tmp_path / "y.pte").exists()


def test_the_cli_prints_it_as_one_line_and_exits_2(
    no_executorch: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda argv: require())
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {INSTALL}\n"
