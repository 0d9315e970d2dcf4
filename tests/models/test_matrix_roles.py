"""Every linear matrix of a decoder block has a role (q, k, v, qkv, o, gate, up, gate_up, down) in
every family gainbench lists, and a module-name suffix means the same role in every family."""

import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from gainbench.models.architectures import (MATRIX_ROLE_SUFFIXES, MATRIX_ROLES, ROLE_SUFFIXES,
                                            block_module_names, matrix_role)
from tests.models.test_every_family import TINY_CONFIGS, VOCAB


def test_every_listed_family_has_a_role_table():
    assert set(MATRIX_ROLE_SUFFIXES) == set(ROLE_SUFFIXES)
    assert all(set(t.values()) <= set(MATRIX_ROLES) for t in MATRIX_ROLE_SUFFIXES.values())


def test_a_suffix_means_one_role_in_every_family():
    roles: dict[str, set] = {}
    for table in MATRIX_ROLE_SUFFIXES.values():
        for suffix, role in table.items():
            roles.setdefault(suffix, set()).add(role)
    assert {s: r for s, r in roles.items() if len(r) > 1} == {}


@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_every_block_matrix_has_a_role(model_type):
    config = AutoConfig.for_model(model_type, vocab_size=VOCAB, bos_token_id=0, eos_token_id=1,
                                  pad_token_id=0, **TINY_CONFIGS[model_type])
    model = AutoModelForCausalLM.from_config(config)
    names = block_module_names(model)
    roles = {name: matrix_role(name, model_type) for name in names}
    assert None not in roles.values(), roles
    assert roles == {name: matrix_role(name) for name in names}  # the same without the family
    # the roles the attention and FFN output tables name agree with this table
    assert roles[ROLE_SUFFIXES[model_type]["attn_out"]] == "o"
    assert roles[ROLE_SUFFIXES[model_type]["ffn_down"]] == "down"
    assert sorted(roles.values(), key=MATRIX_ROLES.index) == sorted(
        set(MATRIX_ROLE_SUFFIXES[model_type].values()), key=MATRIX_ROLES.index)


def test_gpt2_and_llama_names():
    assert matrix_role("transformer.h.3.attn.c_attn") == "qkv"
    assert matrix_role("transformer.h.3.attn.c_proj") == "o"
    assert matrix_role("transformer.h.3.mlp.c_fc") == "up"
    assert matrix_role("transformer.h.3.mlp.c_proj") == "down"
    assert matrix_role("model.layers.0.self_attn.v_proj") == "v"
    assert matrix_role("model.layers.0.mlp.gate_proj", "llama") == "gate"
    assert matrix_role("lm_head") is None
