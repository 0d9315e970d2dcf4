"""A missing extra is a one-line error naming its pip command, exit 2, before anything is written
(issue 18, item 5). The extra is made missing by blocking its import (``sys.modules[name] = None``
in this process, a sitecustomize that does the same in a subprocess)."""

import subprocess
import sys

import pytest

from gainbench import cli
from gainbench.commands import figures
from gainbench.extras import EXTRAS, installed
from tests.conftest import subprocess_env


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("args, blocked, extra", [
    (["logger=wandb"], "wandb", "wandb"),
    (["-m", "hydra/launcher=slurm", "seed=0,1"], "hydra_plugins.hydra_submitit_launcher", "slurm"),
    (["-m", "hydra/launcher=submitit_local", "seed=0,1"], "submitit", "slurm"),
])
def test_a_run_choosing_a_missing_extra_names_it(tmp_path, monkeypatch, capsys, args, blocked,
                                                  extra):
    monkeypatch.setitem(sys.modules, blocked, None)
    monkeypatch.setattr(sys, "argv", ["gainbench", *args, f"results_dir={tmp_path / 'runs'}"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 2
    error = _one_error_line(capsys)
    assert error.startswith("gainbench: error: ")
    assert f"needs {blocked}, which is not installed" in error
    assert error.endswith(f"; pip install 'gainbench[{extra}]'")
    assert not (tmp_path / "runs").exists()


def test_figures_without_matplotlib_name_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(sys, "argv", ["gainbench-figures", str(tmp_path), "--out",
                                      str(tmp_path / "figs")])
    with pytest.raises(SystemExit) as stopped:
        figures.main()
    assert stopped.value.code == 2
    assert _one_error_line(capsys) == ("gainbench-figures: error: drawing figures needs matplotlib, "
                                       "which is not installed; pip install 'gainbench[figures]'")
    assert not (tmp_path / "figs").exists()


def test_installed_extras_pass():
    if not all(installed(module) for modules in EXTRAS.values() for module in modules):
        pytest.skip("the test extra ([test]) is not installed")
    cli.check_extras(["logger=wandb", "-m", "hydra/launcher=slurm"])


@pytest.mark.slow  # a subprocess: the logger is chosen by a user's experiment, seen once composed
def test_a_logger_chosen_in_a_config_is_checked_before_the_run_folder(tmp_path):
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['wandb'] = None\n")
    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "tracked.yaml").write_text(
        "# @package _global_\ndefaults:\n  - smoke\n  - override /logger: wandb\n")
    env = dict(subprocess_env(tmp_path / "cache"), PYTHONPATH=str(blocker))
    result = subprocess.run([sys.executable, "-m", "gainbench", "-cd", str(tmp_path / "mine"),
                             "experiment=tracked", f"results_dir={tmp_path / 'runs'}"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("gainbench: error: logger=wandb needs wandb, which is not "
                                     "installed; pip install 'gainbench[wandb]'")
    assert not (tmp_path / "runs").exists()
