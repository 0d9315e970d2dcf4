"""The base model evaluated once per results folder (gainbench.evaluation.base_rows): a later run
with the same key takes stage 0's rows from <results_dir>/.base/ and writes the rows an
evaluation would have written, bit for bit; what decides the rows is in the key; a damaged
entry is evaluated again and rewritten; one switch turns it off."""

import importlib
import io
import json
import math
import struct
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from gainbench.evaluation import base_rows, evaluators
from gainbench.evaluation.base_rows import BaseRows, spread, weights_digest
from gainbench.evaluation.evaluators import Evaluator, LmEval, Perplexity
from gainbench.models import ModelSpec
from gainbench.protocol import run
from tests.conftest import compose_config

SMALL = ["experiment=smoke", "sequence.order=[kjv_bible,icd10_medical,python_code]",
         "eval.lm_eval.limit=4", "eval.lm_eval.stages=first_last"]
AWKWARD = [-0.0, 5e-324, math.inf, -math.inf, 0.1 + 0.2,
           struct.unpack(">d", bytes.fromhex("fff8000000000001"))[0]]   # a negative NaN with a payload


def _bits(value):
    return struct.pack(">d", value).hex() if isinstance(value, float) else value


class Fixed(Evaluator):
    """Rows of awkward floats, counted per call; its identity is ``settings``."""

    def __init__(self, settings=None):
        self.settings, self.calls = settings or {"x": 1}, 0

    def base_identity(self):
        return {"settings": self.settings, "sources": "test"}

    def __call__(self, model, stage):
        self.calls += 1
        self.provenance = {"made": "by the evaluation"}
        return [dict(eval_kind="ppl", eval_name="d", metric=f"m{i}", value=v, n=i)
                for i, v in enumerate(AWKWARD)]


def _reuser(folder):
    return BaseRows(folder, ModelSpec(name="tiny", source="tiny"), "run-a")


def test_a_second_evaluation_with_the_same_key_reuses_the_rows_bit_for_bit(tmp_path, tiny_model):
    first, second = Fixed(), Fixed()
    made = _reuser(tmp_path).measure(first, tiny_model, 0)
    reused_by = _reuser(tmp_path)
    reused = reused_by.measure(second, tiny_model, 0)
    assert (first.calls, second.calls) == (1, 0)
    assert [{k: _bits(v) for k, v in r.items()} for r in reused] == \
           [{k: _bits(v) for k, v in r.items()} for r in made]
    assert second.provenance == {"made": "by the evaluation"}
    assert reused_by.record["Fixed"]["reused"] is True
    (entry,) = (tmp_path).glob("*.json")
    assert entry.stem == reused_by.record["Fixed"]["key"]
    # later stages, and evaluators that cannot be reused, always evaluate
    assert _reuser(tmp_path).measure(second, tiny_model, 1) and second.calls == 1


def test_what_decides_the_rows_is_in_the_key(tmp_path, tiny_model):
    _reuser(tmp_path).measure(Fixed(), tiny_model, 0)
    other_settings = Fixed({"x": 2})
    _reuser(tmp_path).measure(other_settings, tiny_model, 0)
    assert other_settings.calls == 1
    with torch.no_grad():
        next(tiny_model.parameters())[0, 0] += 1.0      # another checkpoint, same name
    changed_weights = Fixed()
    _reuser(tmp_path).measure(changed_weights, tiny_model, 0)
    assert changed_weights.calls == 1
    torch.set_num_threads(torch.get_num_threads() + 1)  # other numerics
    try:
        more_threads = Fixed()
        _reuser(tmp_path).measure(more_threads, tiny_model, 0)
        assert more_threads.calls == 1
    finally:
        torch.set_num_threads(torch.get_num_threads() - 1)
    assert len(list(tmp_path.glob("*.json"))) == 4


def test_the_weights_digest_reaches_every_tensor_s_last_element(tiny_model):
    for n in (1, 2, 4097, 2**25 + 3):   # past 2**24 a float32 linspace rounds past the end
        where = spread(n, 4096)
        assert len(where) == min(n, 4096) and where[0] == 0 and where[-1] == n - 1
        assert bool((where[1:] > where[:-1]).all())
    before = weights_digest(tiny_model)
    with torch.no_grad():
        next(tiny_model.parameters()).view(-1)[-1] += 1.0
    assert weights_digest(tiny_model) != before


def test_an_edit_to_the_evaluation_code_changes_the_key_of_a_process_that_loads_it(monkeypatch):
    domain = SimpleNamespace(name="d", val_blocks=torch.zeros(2, 4, dtype=torch.long),
                             val_doc_index=torch.zeros(2, 4, dtype=torch.long), val_doc_ids=("a",),
                             val_bytes=8, val_stream_bytes=8)
    before = Perplexity([domain], 4).base_identity()
    assert Perplexity([domain], 8).base_identity() != before  # the batch size is in it
    real = base_rows.Path.read_bytes

    def edited(path):
        return real(path) + (b"# edited" if path.name == "perplexity.py" else b"")
    monkeypatch.setattr(base_rows.Path, "read_bytes", edited)
    # this process still runs the code it loaded, and says so ...
    assert Perplexity([domain], 4).base_identity()["sources"] == before["sources"]
    # ... a process that loads the edit hashes another source
    modules = ["gainbench.evaluation.perplexity", "gainbench.placement"]
    assert evaluators.read_sources(modules) != {name: real(Path(importlib.import_module(name).__file__))
                                                 for name in modules}


@pytest.mark.parametrize("damage", [
    lambda text: text[: len(text) // 2],                                  # cut short
    lambda text: "not json",
    lambda text: text.replace('"value": 0.30000000000000004', '"value": 0.3'),   # a row changed
    lambda text: json.dumps({**json.loads(text), "format": 999}),
])
def test_a_damaged_entry_is_evaluated_again_and_rewritten(tmp_path, tiny_model, capsys, damage):
    made = _reuser(tmp_path).measure(Fixed(), tiny_model, 0)
    (entry,) = tmp_path.glob("*.json")
    entry.write_text(damage(entry.read_text()))
    again = Fixed()
    rows = _reuser(tmp_path).measure(again, tiny_model, 0)
    assert again.calls == 1 and len(rows) == len(made)
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "cannot be reused" in warning[0] and str(entry) in warning[0]
    reused = Fixed()
    _reuser(tmp_path).measure(reused, tiny_model, 0)
    assert reused.calls == 0   # rewritten whole


def test_a_folder_that_cannot_be_written_costs_the_reuse_not_the_run(tmp_path, tiny_model, capsys):
    blocked = tmp_path / "file"
    blocked.write_text("")
    rows = _reuser(blocked / ".base").measure(Fixed(), tiny_model, 0)
    assert len(rows) == len(AWKWARD) and "could not be stored" in capsys.readouterr().err


def test_more_than_one_process_or_the_switch_turns_it_off(tiny_model):
    settings = SimpleNamespace(reuse_base=True, results_dir="r", model=None, run_id="x")
    ranks = SimpleNamespace(world_size=2)
    ddp = SimpleNamespace(ranks=ranks, lockstep=lambda model: False)
    assert BaseRows.for_run(settings, tiny_model, ddp).folder is None
    assert "more than one process" in BaseRows.for_run(settings, tiny_model, ddp).record["off"]
    settings.reuse_base = False
    assert BaseRows.for_run(settings, tiny_model, None).record == {"off": "eval.reuse_base=false"}


def _table_bytes(run_dir):
    """rows.parquet's rows re-serialised without the wall-clock rows (train_seconds, which no
    two runs share) and without the run record in the file's metadata (start time, stage
    seconds): equal bytes, equal rows to the bit."""
    table = pq.read_table(run_dir / "rows.parquet")
    timed = pc.equal(table["metric"], "train_seconds")
    buffer = io.BytesIO()
    pq.write_table(table.filter(pc.invert(timed)).replace_schema_metadata(None), buffer)
    return buffer.getvalue()


def test_two_methods_share_a_base_and_write_what_an_evaluation_writes(tmp_path, monkeypatch):
    stages = {"Perplexity": [], "LmEval": []}
    for cls in (Perplexity, LmEval):
        real = cls.__call__

        def counted(self, model, stage, real=real, name=cls.__name__):
            stages[name].append(stage)
            return real(self, model, stage)
        monkeypatch.setattr(cls, "__call__", counted)

    shared = tmp_path / "shared"
    run(compose_config([*SMALL, f"results_dir={shared}"]))               # gain_ffn: evaluates
    assert stages == {"Perplexity": [0, 1, 2, 3], "LmEval": [0, 1, 2, 3]}
    for name in stages:
        stages[name].clear()
    reused = run(compose_config([*SMALL, "method=lora", f"results_dir={shared}"]))
    assert stages == {"Perplexity": [1, 2, 3], "LmEval": [1, 2, 3]}    # stage 0 not evaluated
    alone = run(compose_config([*SMALL, "method=lora", f"results_dir={tmp_path / 'alone'}",
                                "eval.reuse_base=false"]))
    assert stages["Perplexity"] == [1, 2, 3, 0, 1, 2, 3]

    assert reused.name == alone.name        # an execution setting: the same run id
    assert _table_bytes(reused) == _table_bytes(alone)
    record = json.loads((reused / "run.json").read_text())
    keys = {name: entry["key"] for name, entry in record["base_rows"].items()}
    assert all(entry["reused"] for entry in record["base_rows"].values())
    assert {p.stem for p in (shared / ".base").glob("*.json")} == set(keys.values())
    assert record["lm_eval"] == json.loads((alone / "run.json").read_text())["lm_eval"]
    assert json.loads((alone / "run.json").read_text())["base_rows"] == {
        "off": "eval.reuse_base=false"}
    assert not (tmp_path / "alone" / ".base").exists()
    base = pd.read_parquet(reused / "rows.parquet").query("stage == 0")
    assert set(base.eval_kind) == {"ppl", "ppl_doc", "lm_eval"}
