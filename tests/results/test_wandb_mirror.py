"""wandb mirrors rows when asked, offline by default, and is never fatal."""

import pytest

from gainbench.results.wandb_mirror import WandbMirror

pytest.importorskip("wandb")

ROW = dict(eval_kind="ppl", eval_name="kjv_bible", metric="nll", value=2.5)


def test_off_unless_asked(tmp_path):
    mirror = WandbMirror({"name": "none"}, "run", tmp_path / "run")
    mirror.log_stage(0, [ROW])
    mirror.finish()
    assert mirror.run is None and not (tmp_path / "run").exists()


def test_offline_mode_needs_no_api_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    mirror = WandbMirror({"name": "wandb", "mode": "offline"}, "run-offline", tmp_path)
    assert mirror.run is not None and mirror.run.id == "run-offline"  # the run id is reused on resume
    mirror.log_stage(0, [ROW])
    mirror.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*-run-offline"))


def test_online_without_a_key_warns_and_carries_on(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials
    with pytest.warns(UserWarning, match="wandb disabled"):
        mirror = WandbMirror({"name": "wandb", "mode": "online"}, "run-online", tmp_path)
    mirror.log_stage(0, [ROW])  # a no-op, not a crash
    mirror.finish()
