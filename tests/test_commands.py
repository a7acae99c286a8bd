"""The package's commands are listed in one place (``python -m zslfast``), each runs as listed, and
the data tools are subcommands of ``python -m zslfast.data``."""
import importlib
import os

import pytest

from zslfast.__main__ import COMMANDS
from zslfast.data.__main__ import TOOLS
from zslfast.data.__main__ import main as data_main


@pytest.mark.parametrize("module", [m for m, _ in COMMANDS])
def test_every_listed_command_runs_under_its_listed_name(module, capsys):
    main = importlib.import_module(module if module != "zslfast.data" else "zslfast.data.__main__").main
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m {module} ")


@pytest.mark.parametrize("command", sorted(TOOLS))
def test_each_data_tool_is_a_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        data_main([command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m zslfast.data {command} ")


def test_a_data_subcommand_does_its_work_and_a_wrong_one_is_refused(tmp_path, capsys):
    assert data_main(["synthetic", "--out", str(tmp_path), "--seed", "1"]) == 0
    assert os.path.isfile(tmp_path / "synthetic_default" / "att_splits.mat")
    with pytest.raises(SystemExit) as exit_:
        data_main(["synthesize", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "invalid choice: 'synthesize'" in capsys.readouterr().err
