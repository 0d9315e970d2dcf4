"""The learning-rate search with real runs of the tiny model (one domain, 4 optimiser steps, no
lm-eval or diagnostics: about 2-3 s a run here): targets matched, an unreachable target said so,
a repeated command that runs nothing, divergence remembered, and the script's table and JSON."""

import json
import shlex
from pathlib import Path

import pytest

from gainbench.errors import GainbenchError, Interrupted
from gainbench.settings import settings_from_config
from gainbench.study import command, matching
from gainbench.study.matching import RunPool, format_table, match_learning_rates
from gainbench.study.search import DIVERGED, MATCHED, UNREACHABLE, SearchRules
from tests.conftest import compose_config, load_script

# a one-domain sequence has no earlier domains: numpy warns on the empty means the summary skips
pytestmark = [pytest.mark.filterwarnings("ignore:Mean of empty slice"),
              pytest.mark.filterwarnings("ignore:invalid value encountered")]
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "match_lr.py"
# experiment=matched's lr rule on the smoke preset; at method.lr=0.01 the tiny model's LoRA gains
# 3.6% at lr_scale 1, 7.6% at 4 and 7.6% at 16 (it saturates)
TINY = ["experiment=smoke", "sequence.order=[kjv_bible]", "eval.lm_eval.stages=none",
        "eval.diagnostics.stages=none", "train.lr='${mul:${method.lr},${lr_scale}}'", "method.lr=0.01"]


def _no_runs(monkeypatch):
    def refuse(cfg):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr("gainbench.protocol.run", refuse)


def test_one_run_matches_a_target_bounds_another_and_the_command_resumes(tmp_path, monkeypatch,
                                                                         capsys):
    overrides = [*TINY, f"results_dir={tmp_path}"]
    rules = SearchRules(tolerance=0.5, max_scale=1.0)     # no rate above the default
    match = match_learning_rates(overrides, ["lora"], [3.5, 12], [0], rules, straddle=False)
    hit, beyond = match.methods["lora"]
    assert (hit.status, hit.lr_scale, hit.runs) == (MATCHED, 1.0, 1)
    assert abs(hit.gains[0] - 3.5) <= 0.5 and hit.lr == pytest.approx(0.01)
    assert (beyond.status, beyond.lr_scale, beyond.runs) == (UNREACHABLE, None, 0)
    assert "lr bound" in beyond.reason
    assert match.new_runs == 1 and [r.lr_scale for r in match.runs] == [1.0]
    # the run is the one `python -m gainbench <overrides> method=lora lr_scale=1 seed=0` makes
    plain = settings_from_config(compose_config([*overrides, "method=lora", "lr_scale=1", "seed=0"]))
    assert match.runs[0].run_id == plain.run_id and (tmp_path / plain.run_id / "rows.parquet").exists()

    # the same command again, through the script: nothing runs, the table says the same
    _no_runs(monkeypatch)
    load_script(SCRIPT).main([*overrides, "--methods", "lora", "--targets", "3.5", "12",
                              "--tolerance", "0.5", "--max-scale", "1", "--seeds", "0",
                              "--no-straddle"])
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:5] == ["method", "target", "%", "status", "lr"]
    assert "lora at 12%: unreachable: lr bound" in table and "0 of them run by this call" in table
    saved = json.loads(match.json_path.read_text())
    assert saved["new_runs"] == 0 and len(saved["runs"]) == 1
    assert [t["status"] for t in saved["methods"]["lora"]] == [MATCHED, UNREACHABLE]
    assert shlex.split(saved["command"])[2:] == [*overrides, "--methods", "lora", "--targets", "3.5",
                                                 "12", "--tolerance", "0.5", "--seeds", "0",
                                                 "--max-scale", "1", "--no-straddle"]


def test_brackets_up_and_finds_the_gain_saturating(tmp_path):
    overrides = [*TINY, f"results_dir={tmp_path}"]
    match = match_learning_rates(overrides, ["lora"], [7.5, 12], [0], SearchRules(tolerance=0.25),
                                 straddle=False)
    hit, beyond = match.methods["lora"]
    assert (hit.status, hit.lr_scale, hit.runs) == (MATCHED, 4.0, 2)
    assert abs(hit.gains[0] - 7.5) <= 0.25 and hit.lr == pytest.approx(0.04)
    assert (beyond.status, beyond.lr_scale, beyond.runs) == (UNREACHABLE, None, 1)
    assert "saturates" in beyond.reason
    assert match.new_runs == 3 and {r.lr_scale for r in match.runs} == {1.0, 4.0, 16.0}


@pytest.mark.slow
def test_the_other_seeds_run_at_the_rates_found_and_straddle_each_target(tmp_path, monkeypatch):
    overrides = [*TINY, f"results_dir={tmp_path}"]
    match = match_learning_rates(overrides, ["lora"], [5.0], [0, 1], SearchRules(tolerance=0.5))
    result, = match.methods["lora"]
    assert result.status == MATCHED and set(result.gains) == {0, 1}
    assert all(g is not None for g in result.gains.values())
    runs_of = {seed: {r.lr_scale: r.gain for r in match.runs if r.seed == seed} for seed in (0, 1)}
    assert result.lr_scale in runs_of[1]                       # seed 1 at the rate found
    for seed, gains in runs_of.items():                         # each seed's front straddles 5%
        assert seed in result.unstraddled or (min(gains.values()) < 5 < max(gains.values()))
    assert result.runs == len(match.runs)                       # every run is this target's
    _no_runs(monkeypatch)
    again = match_learning_rates(overrides, ["lora"], [5.0], [0, 1], SearchRules(tolerance=0.5))
    assert again.new_runs == 0 and again.methods["lora"][0].gains == result.gains


def test_a_diverged_run_counts_above_every_target_and_is_not_trained_again(tmp_path, monkeypatch):
    # full fine-tuning at an absurd rate: stage 1 stops on a non-finite loss (lr 1.6e5), or its
    # perplexity overflows (lr 10; the evaluation's exp raises OverflowError today)
    pool = RunPool([*TINY, f"results_dir={tmp_path}", "method.lr=10"], say=lambda text: None)
    assert pool.gain("full_ft", 0, 1.0) == DIVERGED
    assert pool.gain("full_ft", 0, 16000.0) == DIVERGED
    reasons = [r.diverged for r in pool.records.values()]
    # a perplexity past exp's range (NLL > 709 nats) is inf, so the run finishes non-finite
    assert "non-finite" in reasons[0] and "loss is nan" in reasons[1]
    _no_runs(monkeypatch)
    again = RunPool(pool.overrides, diverged=pool.diverged, say=lambda text: None)
    assert again.gain("full_ft", 0, 16000.0) == DIVERGED and again.new_runs == 0


def test_the_json_remembers_diverged_runs_for_the_next_call(tmp_path):
    path = tmp_path / "match_lr-x.json"
    path.write_text(json.dumps({"runs": [{"run_id": "a", "diverged": "loss is nan"},
                                         {"run_id": "b", "diverged": None}]}))
    assert matching._diverged_from(path) == {"a": "loss is nan"}
    assert matching._diverged_from(tmp_path / "none.json") == {}


@pytest.mark.parametrize("override, message", [
    ("method=gain", "match_lr sets method, seed, lr_scale itself"),
    ("seed=1", "drop 'seed=1'"),
    ("lr_scale=2", "drop 'lr_scale=2'"),
])
def test_keys_the_search_sets_are_refused(override, message, tmp_path):
    with pytest.raises(GainbenchError, match=message):
        match_learning_rates([*TINY, override], ["lora"], [2], [0])


def test_a_config_where_lr_scale_moves_nothing_is_refused_before_any_run(tmp_path):
    with pytest.raises(GainbenchError, match=r"add experiment=matched .*train.lr 2e-05 at lr_scale=1"):
        match_learning_rates(["experiment=smoke", f"results_dir={tmp_path}"], ["full_ft"], [2], [0])
    with pytest.raises(GainbenchError, match="name the methods"):
        match_learning_rates(["experiment=smoke"], None, [2], [0])
    with pytest.raises(GainbenchError, match="unknown method 'gian'"):
        match_learning_rates(["experiment=matched"], ["gian"], [2], [0])


def test_the_matched_preset_names_the_methods_and_its_header_the_script_s_defaults():
    cfg = compose_config(["experiment=matched"])
    assert cfg.train.lr == cfg.method.lr and cfg.lr_scale == 1.0
    base = matching.compose_config(["experiment=matched"], hydra_node=True)
    methods, seeds = matching._methods_and_seeds(base, None, None)
    assert methods == ["gain", "gain_ffn", "full_ft", "lora", "lora_gain_modules", "lora_all",
                       "replay_lora", "ewc"] and seeds == [0, 1, 2]
    header = (ROOT / "configs" / "experiment" / "matched.yaml").read_text()
    documented = next(line for line in header.splitlines() if "scripts/match_lr.py" in line)
    words = shlex.split(documented.lstrip("# "))
    assert words[:2] == ["python", "scripts/match_lr.py"]
    args = command.parser().parse_intermixed_args(words[2:])
    assert args.targets == list(matching.DEFAULT_TARGETS) and args.seeds == seeds
    assert command.rules_of(args) == SearchRules()
    assert args.overrides[0] == "experiment=matched"


def test_the_table_says_why_a_target_was_not_matched():
    match = matching.Match(["experiment=matched"], [2.0, 16.0], [0, 1], SearchRules())
    match.methods["gain"] = [
        matching.TargetResult(2.0, MATCHED, 4.0, 0.012, {0: 2.1, 1: 1.8}, runs=5),
        matching.TargetResult(16.0, UNREACHABLE, None, None, {}, runs=3,
                              reason="the gain saturates below the target")]
    table = format_table(match)
    assert "gain at 16%: unreachable: the gain saturates below the target" in table
    assert "0.012" in table and "2.10" in table and "1.80" in table


def test_an_interrupted_search_says_once_how_to_resume(monkeypatch, capsys):
    def stopped(*args, **kwargs):
        raise Interrupted(143, stage=2)

    monkeypatch.setattr(command, "match_learning_rates", stopped)
    with pytest.raises(SystemExit) as exit_:
        command.main(["experiment=matched"])
    assert exit_.value.code == 143
    assert capsys.readouterr().err.strip() == ("match_lr: interrupted during stage 2; "
                                               "rerun the same command to resume")


def test_the_saved_command_repeats_every_rule_that_is_not_a_default():
    rules = SearchRules(tolerance=0.5, start=1.5, factor=2.0, max_runs=3, step="interpolate",
                        min_scale=0.01, max_scale=64.0, straddle_margin=0.1)
    line = matching.command_line(["experiment=matched"], [4, 8], [0, 1], rules, ["lora"])
    args = command.parser().parse_intermixed_args(shlex.split(line)[2:])
    assert command.rules_of(args) == rules and "--start-scale 1.5" in line
    assert "--start-scale" not in matching.command_line([], [4], [0], SearchRules(), ["lora"])


def test_a_search_stopped_in_its_first_method_saves_the_command_that_resumes_it(tmp_path,
                                                                                monkeypatch):
    calls = []

    def first_then_stopped(self, method, seed, scale):
        calls.append(scale)
        if len(calls) > 1:
            raise Interrupted(143, stage=1)
        return 1.0

    monkeypatch.setattr(RunPool, "gain", first_then_stopped)
    with pytest.raises(Interrupted):
        match_learning_rates([*TINY, f"results_dir={tmp_path}"], ["lora", "gain"], [4], [0])
    saved = json.loads(next(tmp_path.glob("match_lr-*.json")).read_text())
    assert saved["methods"] == {} and "--methods lora gain --targets 4" in saved["command"]


def test_an_option_of_the_named_method_is_an_override_like_any_other(tmp_path):
    """``method.options.lam=...`` exists in ewc's config only, not in the default method's: the
    search composes it with the method named, and the runs carry it (their own front)."""
    overrides = [*TINY, f"results_dir={tmp_path}", "method.options.lam=1e7"]
    match = match_learning_rates(overrides, ["ewc"], [3], [0], SearchRules(tolerance=50),
                                 straddle=False)
    (run,) = match.runs
    stored = json.loads((tmp_path / run.run_id / "run.json").read_text())["config"]["method"]
    assert (stored["name"], stored["options"]["lam"]) == ("ewc", 1e7)
    assert "method.options.lam=1e7 --methods ewc" in json.loads(match.json_path.read_text())["command"]
    with pytest.raises(GainbenchError, match="unknown method 'gian'"):
        match_learning_rates(overrides, ["gian"], [2], [0])
