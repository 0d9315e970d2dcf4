"""The paths only a GPU exercises: bf16 autocast, SDPA kernels, FSDP2 over NCCL, weights sharded
for the whole run, and the in-stage checkpoint with CUDA's RNG, each on a tiny model on CUDA.

Marked ``cuda`` and skipped without a CUDA device; benchmarks/gpu_check.sh runs them on the GPU
machine (``pytest -m cuda tests/test_cuda.py``). With ``GAINBENCH_CUDA_TESTS_ON_CPU=1`` the same
tests run on the CPU, gloo standing in for NCCL (``gpu_check.sh --dry-run``), so their own code is
rehearsed where no GPU is.

Stated tolerances (relative, unless said): bf16 autocast vs fp32 training, mean loss 2e-2;
FSDP2 or sharded weights on one rank vs the plain model, trained tensors 1e-5 in fp32 (one rank:
the same arithmetic, gathers and reduce-scatters are copies), 2e-2 on bf16 weights; SDPA vs eager
attention, logits 1e-4 absolute in fp32 and 3e-2 in bf16; a resumed stage vs an uninterrupted one,
1e-6 (bitwise on CPU; CUDA may pick other kernels for other shapes, never here).
"""

import contextlib
import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist

from gainbench.methods import make_method
from gainbench.models.tiny import build_tiny_model
from gainbench.training.checkpoint import StageCheckpoint
from gainbench.training.loop import TrainSettings, train_stage
from tests.conftest import TINY_ARCHITECTURES


def _device() -> torch.device | None:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get("GAINBENCH_CUDA_TESTS_ON_CPU") == "1":
        return torch.device("cpu")
    return None


DEVICE = _device()
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEVICE is None, reason="needs a CUDA device "
                                 "(GAINBENCH_CUDA_TESTS_ON_CPU=1 rehearses these tests on the CPU)")]


def _model(tokenizer, architecture="llama", dtype=torch.float32):
    return build_tiny_model(TINY_ARCHITECTURES[architecture], tokenizer, init_seed=0).to(DEVICE, dtype)


def _blocks(tokenizer, n=8, length=32):
    """``n`` blocks of random token ids (seeded), on the CPU as a stage gets them."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, len(tokenizer), (n, length), generator=generator)


def _train(model, name, blocks, checkpoint=None, regularization=None, **settings):
    """Attach ``name`` (seeded init), train one stage; returns (adapted model, params, result)."""
    torch.manual_seed(0)
    method = make_method(name)
    adapted = method.attach(model)
    params = method.trainable_parameters(adapted)
    result = train_stage(adapted, params, blocks,
                         TrainSettings(**{"lr": 1e-2, "batch_size": 2, **settings}), seed=1,
                         exempt_from_weight_decay=method.exempt_from_weight_decay,
                         regularization=regularization, checkpoint=checkpoint)
    return adapted, params, result


def _close(actual: dict, expected: dict, rtol: float) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        a, e = actual[name].detach().float().cpu(), expected[name].detach().float().cpu()
        assert torch.allclose(a, e, rtol=rtol, atol=rtol * e.abs().max().item()), (
            name, (a - e).abs().max().item())


@pytest.fixture(scope="module")
def one_rank():
    """A process group of one rank: NCCL on CUDA, gloo on the CPU (what ``torchrun
    --nproc_per_node=1`` would give ``init_ranks``)."""
    if dist.is_initialized():
        yield
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if DEVICE.type == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group("nccl" if DEVICE.type == "cuda" else "gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


# -- bf16 autocast --------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_bf16_autocast_trains_like_fp32_and_keeps_fp32_weights(tiny_tokenizer, architecture):
    blocks = _blocks(tiny_tokenizer)
    base = _model(tiny_tokenizer, architecture)
    _, fp32_params, fp32 = _train(copy.deepcopy(base), "gain_ffn", blocks)
    seen = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: seen.append(out.dtype) if isinstance(out, torch.Tensor)
        and isinstance(module, torch.nn.Linear) else None)
    try:
        _, bf16_params, bf16 = _train(copy.deepcopy(base), "gain_ffn", blocks, precision="bf16")
    finally:
        hook.remove()
    assert torch.bfloat16 in seen  # autocast ran the matmuls in bf16
    assert all(p.dtype == torch.float32 for p in bf16_params.values())  # fp32 scales and AdamW
    assert bf16.mean_loss != fp32.mean_loss  # a different computation...
    assert abs(bf16.mean_loss - fp32.mean_loss) / fp32.mean_loss < 2e-2  # ...to the same end
    moved = max((p - 1).abs().max().item() for p in bf16_params.values())
    assert moved > 1e-3


def test_bf16_weights_train_fp32_scales(tiny_tokenizer):
    """model.dtype=bfloat16 (the 7B presets): GAIN's scales stay fp32 and absorb into bf16."""
    blocks = _blocks(tiny_tokenizer)
    model = _model(tiny_tokenizer, dtype=torch.bfloat16)
    adapted, params, result = _train(model, "gain_ffn", blocks)
    assert torch.isfinite(torch.tensor(result.mean_loss))
    assert all(p.dtype == torch.float32 and p.device.type == DEVICE.type for p in params.values())
    absorbed = make_method("gain_ffn").absorb(adapted)
    assert {p.dtype for p in absorbed.parameters()} == {torch.bfloat16}


# -- attention kernels ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_sdpa_attention_matches_eager(tiny_tokenizer, token_batch, dtype, atol):
    model = _model(tiny_tokenizer, dtype=dtype).eval()
    assert model.config._attn_implementation == "sdpa"  # what a run gets by default
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    ids = token_batch.to(DEVICE)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits.float(), eager(ids).logits.float(),
                                   atol=atol, rtol=0)


def test_a_training_step_runs_on_the_flash_kernel_in_bf16(tiny_tokenizer, token_batch):
    """No padding mask: transformers calls SDPA with is_causal=True, which the flash kernel
    takes (forcing it fails loudly if the call had fallen back to the math kernel)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = _model(tiny_tokenizer, dtype=torch.bfloat16).train()
    ids = token_batch.to(DEVICE)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    assert torch.isfinite(loss)


# -- FSDP2 and sharded weights on one rank --------------------------------------------------


@pytest.mark.parametrize("name, dtype", [("gain_ffn", torch.float32), ("full_ft", torch.float32),
                                         ("gain_ffn", torch.bfloat16)])
def test_fsdp2_on_one_rank_trains_as_one_process(tiny_tokenizer, one_rank, monkeypatch, name, dtype):
    """train.strategy=fsdp's engine (a twin sharded per decoder layer, gathered back at the end)
    on NCCL. One rank: for_training would hand back the plain model, so it is asked for the
    twin here."""
    import gainbench.training.loop as loop
    from gainbench.training.parallel import _fully_sharded

    blocks = _blocks(tiny_tokenizer)
    base = _model(tiny_tokenizer, dtype=dtype)
    _, expected, plain = _train(copy.deepcopy(base), name, blocks)
    twins = []
    monkeypatch.setattr(loop, "for_training", lambda model, params, strategy, ranks:
                        twins.append(_fully_sharded(model, params)) or twins[-1])
    _, trained, sharded = _train(copy.deepcopy(base), name, blocks, strategy="fsdp")
    assert twins and twins[0].twin_shards
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert abs(sharded.mean_loss - plain.mean_loss) / plain.mean_loss < tolerance
    _close(trained, expected, tolerance)


def test_sharded_weights_on_one_rank_load_train_and_absorb_as_the_whole_model(tiny_tokenizer,
                                                                             one_rank):
    """train.shard_weights's path: rank 0's weights broadcast into FSDP2 shards, GAIN attached
    and absorbed in place on the shards, the stage trained on the sharded model."""
    from gainbench.distributed import Ranks
    from gainbench.training.sharding import gathered, is_sharded, on_sharded_weights, shard_model

    blocks = _blocks(tiny_tokenizer)
    loaded = _model(tiny_tokenizer).cpu()
    base_state = {k: v.clone() for k, v in loaded.state_dict().items()}
    sharded = shard_model(copy.deepcopy(loaded), Ranks(), DEVICE)
    assert is_sharded(sharded)
    whole = copy.deepcopy(loaded).to(DEVICE)
    ids = blocks[:2].to(DEVICE)
    with torch.no_grad():
        torch.testing.assert_close(sharded(ids).logits, whole(ids).logits, rtol=1e-5, atol=1e-5)

    method = make_method("gain_ffn")
    absorbed = {}
    for label, model, editing in (("whole", whole, contextlib.nullcontext),
                                  ("sharded", sharded, lambda: on_sharded_weights(sharded))):
        torch.manual_seed(0)
        with editing():
            adapted = method.attach(model)
        params = method.trainable_parameters(adapted)
        train_stage(adapted, params, blocks, TrainSettings(lr=1e-2, batch_size=2), seed=1,
                    exempt_from_weight_decay=True)
        with editing():
            absorbed[label] = gathered(dict(method.absorb(adapted).state_dict()))
    _close(absorbed["sharded"], absorbed["whole"], 1e-5)
    assert any(not torch.equal(absorbed["whole"][k], v) for k, v in base_state.items())


# -- in-stage checkpoint --------------------------------------------------------------------


class _Preempted(Exception):
    pass


def test_a_stage_killed_mid_way_resumes_from_its_checkpoint_with_cudas_rng(tiny_tokenizer,
                                                                         tmp_path, capsys):
    """LoRA's dropout draws from the device's RNG: a resumed stage matches only if the checkpoint
    carries it (``cuda_rng`` on CUDA)."""
    blocks = _blocks(tiny_tokenizer, n=12)  # 6 steps
    base = _model(tiny_tokenizer)
    _, expected, whole = _train(copy.deepcopy(base), "lora", blocks)

    steps = []

    def preempt_in_step_5():
        steps.append(1)
        if len(steps) == 5:  # the checkpoint after step 4 is on disk
            raise _Preempted

    path = tmp_path / "partial_stage_1.pt"
    with pytest.raises(_Preempted):
        _train(copy.deepcopy(base), "lora", blocks, StageCheckpoint(path, every=2), preempt_in_step_5)
    saved = torch.load(path, weights_only=True)
    assert saved["steps_done"] == 4
    assert ("cuda_rng" in saved) == (DEVICE.type == "cuda")

    _, resumed, result = _train(copy.deepcopy(base), "lora", blocks, StageCheckpoint(path, every=2))
    assert "continuing from step 4/6" in capsys.readouterr().out
    assert all(p.device.type == DEVICE.type for p in resumed.values())
    assert result.mean_loss == pytest.approx(whole.mean_loss, rel=1e-6)
    _close(resumed, expected, 1e-6)
