"""Checkpoints inside a stage: a job killed mid-stage continues from its last checkpoint and ends
with the same rows, bitwise, as an uninterrupted run; non-finite losses stop or skip."""

import json

import pandas as pd
import pytest
import torch

from gainbench.errors import GainbenchError
from gainbench.protocol import run
from gainbench.training.checkpoint import StageCheckpoint
from gainbench.training.loop import TrainSettings, train_stage
from tests.conftest import compose_config

SMOKE = ["experiment=smoke", "sequence.order=[kjv_bible,icd10_medical,python_code]",
         "eval.lm_eval.stages=none", "eval.diagnostics.stages=none", "train.checkpoint_every=1"]


class Killed(BaseException):
    """Stands in for SIGKILL/preemption: not an Exception, so nothing catches it."""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gain_ffn", "lora"])
def test_a_kill_inside_a_stage_resumes_from_its_checkpoint_with_identical_rows(
        tmp_path, monkeypatch, method):
    reference = run(compose_config(SMOKE + [f"method={method}", f"results_dir={tmp_path / 'a'}"]))

    cfg = compose_config(SMOKE + [f"method={method}", f"results_dir={tmp_path / 'b'}"])
    real_save, real_restore, saves, restored = StageCheckpoint.save, StageCheckpoint.restore, [], []

    def save_then_die(self, steps_done, *args):
        real_save(self, steps_done, *args)
        saves.append((self.path.name, steps_done))
        if self.path.name == "partial_stage_2.pt" and steps_done == 2:
            raise Killed  # after step 2 of 4 of stage 2, its checkpoint on disk

    def spy_restore(self, *args):
        out = real_restore(self, *args)
        restored.append((self.path.name, out[0]))
        return out

    monkeypatch.setattr(StageCheckpoint, "save", save_then_die)
    with pytest.raises(Killed):
        run(cfg)
    run_dir = next((tmp_path / "b").glob("*/run.json")).parent
    assert json.loads((run_dir / "run.json").read_text())["finished_stages"] == [0, 1]
    assert (run_dir / "stages" / "partial_stage_2.pt").exists()

    monkeypatch.setattr(StageCheckpoint, "save", real_save)
    monkeypatch.setattr(StageCheckpoint, "restore", spy_restore)
    resumed = run(cfg)
    assert ("partial_stage_2.pt", 2) in restored  # continued after step 2, not from scratch
    assert not list((resumed / "stages").glob("partial_*"))  # cleared once each stage is saved
    ref_rows = pd.read_parquet(reference / "rows.parquet")
    new_rows = pd.read_parquet(resumed / "rows.parquet")
    keep = lambda r: r[r.metric != "train_seconds"].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(keep(ref_rows), keep(new_rows))  # bitwise, on CPU


class _Toy(torch.nn.Module):
    """loss = (w - 2)^2, NaN on the batches whose first token is 0."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, labels):
        loss = (self.w - 2) ** 2
        if (input_ids[:, 0] == 0).any():
            loss = loss * float("nan")
        return type("Out", (), {"loss": loss})()


def _blocks(first_tokens):
    return torch.tensor([[t, 1, 1] for t in first_tokens])


def test_a_nonfinite_loss_names_the_step_and_the_last_checkpoint(tmp_path):
    model = _Toy()
    checkpoint = StageCheckpoint(tmp_path / "partial.pt", every=1)
    settings = TrainSettings(lr=0.1, batch_size=1, schedule="constant")
    blocks = _blocks([5, 0])  # order is seeded; find which step meets the NaN
    with pytest.raises(GainbenchError, match=r"loss is nan at step \d/2.*(partial\.pt|train\.nonfinite=skip)"):
        train_stage(model, {"w": model.w}, blocks, settings, seed=0, checkpoint=checkpoint)


def test_nonfinite_skip_drops_the_batch_and_counts_it():
    model = _Toy()
    settings = TrainSettings(lr=0.1, batch_size=1, schedule="constant", nonfinite="skip")
    result = train_stage(model, {"w": model.w}, _blocks([5, 0, 6, 0]), settings, seed=0)
    assert result.skipped_batches == 2
    assert torch.isfinite(model.w) and model.w.item() > 0  # two good steps moved it toward 2


def test_checkpoint_settings_are_checked():
    with pytest.raises(GainbenchError, match="nonfinite must be stop or skip"):
        TrainSettings(lr=1e-3, nonfinite="retry")
    with pytest.raises(ValueError, match=">= 1 step"):
        StageCheckpoint("x.pt", every=0)


def _train_toy_with_checkpoints(path, name="w"):
    """Three steps of the toy stage, checkpointed to ``path`` after each but the last (a
    checkpoint is left behind), its one tensor named ``name``; resumes from ``path`` if there."""
    model = _Toy()
    settings = TrainSettings(lr=0.1, batch_size=1, schedule="constant")
    return train_stage(model, {name: model.w}, _blocks([5, 6, 7]), settings, seed=0,
                       checkpoint=StageCheckpoint(path, every=1))


@pytest.mark.parametrize("damage", [b"", b"not a checkpoint", "truncated"])
def test_a_damaged_in_stage_checkpoint_is_a_clear_error_naming_the_file_and_the_fix(tmp_path, damage):
    path = tmp_path / "partial_stage_2.pt"
    _train_toy_with_checkpoints(path)
    path.write_bytes(path.read_bytes()[:40] if damage == "truncated" else damage)
    with pytest.raises(GainbenchError, match=r"partial_stage_2.pt cannot be read .*delete it to restart"):
        _train_toy_with_checkpoints(path)


def test_a_checkpoint_whose_shard_folder_is_gone_is_a_clear_error(tmp_path):
    # what FSDP shards is written by every rank into a folder the file names; without it the
    # file alone cannot restore the stage
    path = tmp_path / "partial_stage_2.pt"
    _train_toy_with_checkpoints(path)
    state = torch.load(path, weights_only=True)
    del state["params"]["w"]
    state.update(shards="partial_stage_2.shards-000002", sharded_keys=["params/w"])
    torch.save(state, path)
    with pytest.raises(GainbenchError, match=r"partial_stage_2.pt cannot be read .*delete it to "
                                             r"restart .*partial_stage_2.shards-\* folders"):
        _train_toy_with_checkpoints(path)


def test_a_checkpoint_of_other_tensors_is_refused(tmp_path):
    path = tmp_path / "partial.pt"
    _train_toy_with_checkpoints(path)
    with pytest.raises(GainbenchError, match=r"does not match .*missing \['v'\]"):
        _train_toy_with_checkpoints(path, name="v")


@pytest.mark.slow
def test_a_damaged_stage_state_stops_the_resume_with_the_fix(tmp_path, monkeypatch):
    cfg = compose_config(SMOKE + [f"results_dir={tmp_path}"])
    real_save = StageCheckpoint.save

    def die_in_stage_2(self, steps_done, *args):
        real_save(self, steps_done, *args)
        if self.path.name == "partial_stage_2.pt":
            raise Killed

    monkeypatch.setattr(StageCheckpoint, "save", die_in_stage_2)
    with pytest.raises(Killed):
        run(cfg)
    run_dir = next(tmp_path.glob("*/run.json")).parent
    (run_dir / "stages" / "stage_1.safetensors").write_bytes(b"\x00" * 100)
    monkeypatch.setattr(StageCheckpoint, "save", real_save)
    with pytest.raises(GainbenchError, match=r"stage_1.safetensors, which replays finished stage 1 "
                                             r"on resume, cannot be read .*move the folder away"):
        run(cfg)
    assert json.loads((run_dir / "run.json").read_text())["finished_stages"] == [0, 1]
