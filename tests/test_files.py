"""Result files are as readable as any file the user writes: they honour the umask."""

import os
import stat

import pytest
import torch

from gainbench import files
from gainbench.files import atomic_write
from gainbench.results.store import RunStore


@pytest.fixture
def with_umask():
    def set_mask(mask):
        files.umask.cache_clear()
        previous.append(os.umask(mask))
    previous = []
    yield set_mask
    if previous:
        os.umask(previous[0])
    files.umask.cache_clear()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600),
                                        (0o002, 0o664)])
def test_atomic_write_gives_the_mode_the_umask_allows(tmp_path, with_umask, mask, mode):
    with_umask(mask)
    assert files.umask() == mask
    atomic_write(tmp_path / "a.txt", lambda tmp: open(tmp, "w").write("x"))
    assert _mode(tmp_path / "a.txt") == mode


def test_a_writer_that_replaces_the_temp_file_still_gets_the_mode(tmp_path, with_umask):
    with_umask(0o022)

    def replace(tmp):  # as some libraries do: write elsewhere, then move onto the path
        other = tmp_path / "other"
        other.write_text("x")
        os.chmod(other, 0o600)
        os.replace(other, tmp)
    atomic_write(tmp_path / "b.txt", replace)
    assert _mode(tmp_path / "b.txt") == 0o644


def test_every_file_of_a_run_folder_is_0644_under_a_022_umask(tmp_path, with_umask):
    with_umask(0o022)
    store = RunStore(tmp_path / "run")
    store.finish_stage(0, [dict(eval_kind="ppl", eval_name="d", metric="nll", value=1.0, n=1)],
                       {"run_id": "r"})
    store.save_stage_state(1, {"w": torch.ones(2)})
    written = [p for p in store.run_dir.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"rows.parquet", "rows.csv", "run.json", "stage_1.safetensors"}
    assert {p.name: _mode(p) for p in written} == {p.name: 0o644 for p in written}
