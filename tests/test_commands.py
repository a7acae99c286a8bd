"""The package's commands are listed in one place (``zslfast`` / ``python -m zslfast``), each runs as
listed and as a subcommand of the ``zslfast`` console command, and the data tools are subcommands of
``python -m zslfast.data``."""
import importlib
import os
import subprocess
import sys

import pytest

import torch

import zslfast
from zslfast.__main__ import COMMANDS
from zslfast.__main__ import main as zslfast_main
from zslfast.data.__main__ import TOOLS
from zslfast.data.__main__ import main as data_main


@pytest.mark.parametrize("name,module", [(n, m) for n, m, _ in COMMANDS])
def test_every_listed_command_runs_under_its_listed_name_and_as_a_subcommand(name, module, capsys):
    shown = module.removesuffix(".__main__")
    for run in (importlib.import_module(module).main, lambda argv: zslfast_main([name, *argv])):
        with pytest.raises(SystemExit) as exit_:
            run(["--help"])
        assert exit_.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: python -m {shown} ")


def test_the_console_command_lists_versions_and_refuses_unknown_subcommands(capsys):
    assert zslfast_main([]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name, _, _ in COMMANDS)
    assert zslfast_main(["--version"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"zslfast {zslfast.__version__} (torch {torch.__version__}, extension: ")
    assert zslfast_main(["trian"]) == 2
    assert capsys.readouterr().err.strip() == ("zslfast: error: unknown command 'trian'; choose from train, sweep, "
                                               "predict, report, plot, data, golden")


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the console script is checked in the project's venv")
def test_the_installed_console_script_runs():
    script = os.path.join(os.path.dirname(sys.executable), "zslfast")
    out = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith(f"zslfast {zslfast.__version__} "), out


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
