"""What a run id answers to: settings that change the numbers change it; settings that change only
how a step is computed leave it alone (those are recorded in run.json), so a rerun with more
memory-saving or more processes resumes and compares with the same folder. On the smoke preset,
from the typed settings alone: no run needed."""

import pytest

from gainbench.settings import settings_from_config
from tests.conftest import compose_config

SMOKE = ["experiment=smoke", "sequence.order=[kjv_bible,icd10_medical,python_code]"]


def _run_id(*overrides):
    return settings_from_config(compose_config(SMOKE + list(overrides))).run_id


@pytest.fixture(scope="module")
def smoke_id():
    return _run_id()


@pytest.mark.parametrize("execution", [
    "train.grad_accum_steps=3",               # the same step in smaller pieces
    "train.activation_checkpointing=true",    # the same step, activations recomputed
    "train.checkpoint_every=1",
])
def test_how_a_step_is_computed_leaves_the_run_id_alone(execution, smoke_id):
    assert _run_id(execution) == smoke_id


@pytest.mark.parametrize("numbers", [
    "train.precision=bf16",   # another training run, close to fp32
    "eval.stride=16",         # other perplexities: every token scored, with more context
    "train.pool_factor=2",    # another pool for a seed to draw each stage's text from
    "eval.val_doc_tokens=32",                 # another validation set: more, shorter documents
    "eval.val_doc_tokens=null",               # whole documents
    "eval.val_dedup.max_containment=0.5",     # fewer training documents screened out
    "eval.val_dedup.shingle_words=8",
])
def test_what_changes_the_numbers_changes_the_run_id(numbers, smoke_id):
    assert _run_id(numbers) != smoke_id


def test_the_minimum_of_validation_documents_only_checks_so_it_leaves_the_run_id_alone(smoke_id):
    # a run it lets through computes the same numbers whatever the minimum is
    assert _run_id("eval.val_min_documents=4") == smoke_id
