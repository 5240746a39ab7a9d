"""Under FSDP on two CPU ranks (gloo): the rollout engine's weights are gathered a layer at a time and equal the
unsharded model's; log-probs through the sharded model equal the plain model's; gradients clipped across ranks
equal `clip_grad_norm_` on the whole model (issue 21: PPO and GRPO under FSDP with the vLLM engine)."""

from __future__ import annotations

import functools
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lit_llm.checkpoint import load_weights
from lit_llm.convert.hf import hf_converter, hf_tensors
from lit_llm.model import GPT, Config
from lit_llm.rollout.layout import layout, response_logps
from lit_llm.rollout.weights import is_fsdp, weight_chunks
from lit_llm.stages.optim import clip_sharded_grad_norm

CONFIG = dict(n_layer=3, n_head=2, n_embd=32, intermediate_size=64, block_size=32, vocab_size=96)
PROMPTS, RESPONSES = [[5, 6, 7], [8, 9]], [[10, 11, 12, 13], [14]]


def _plain(tie: bool) -> GPT:
    torch.manual_seed(0)
    return GPT(Config.from_name("tiny", **CONFIG, tie_embeddings=tie))


def _rank(rank: int, port: int, tie: bool, out: str) -> None:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    plain = _plain(tie)
    wrap = functools.partial(FSDP, device_id=torch.device("cpu"), use_orig_params=True)
    sharded = wrap(GPT(plain.config, wrap=wrap))  # as Policy.build does: the root wrapped, then loaded
    load_weights(sharded, plain.state_dict(), "test")

    # Copied as they come: a chunk's tensors are valid only while it is gathered.
    chunks = [{k: v.clone() for k, v in c.items()} for c in weight_chunks(sharded)]

    exp = layout(PROMPTS, RESPONSES, 0, torch.device("cpu"))
    ours = response_logps(sharded, exp["ids"], exp["valid"], exp["P"], 96, 0.7)[0]
    theirs = response_logps(plain, exp["ids"], exp["valid"], exp["P"], 96, 0.7)[0]

    for model in (sharded, plain):
        logps = response_logps(model, exp["ids"], exp["valid"], exp["P"], 96, 1.0)[0]
        (-(logps * exp["valid"][:, exp["P"]:]).sum() * 50).backward()  # a large gradient, so clipping bites
    norm = clip_sharded_grad_norm(sharded.parameters(), 0.5, lambda x: (dist.all_reduce(x), x)[1])
    expected = torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.5)
    with FSDP.summon_full_params(sharded, with_grads=True, writeback=False):
        grads = {n.replace("_fsdp_wrapped_module.", ""): p.grad.clone() for n, p in sharded.named_parameters()}
    if rank == 0:
        torch.save({"chunks": chunks, "ours": ours, "theirs": theirs, "norm": norm, "expected": expected,
                    "grads": grads, "plain_grads": {n: p.grad for n, p in plain.named_parameters()},
                    "is_fsdp": is_fsdp(sharded)}, out)  # fmt: skip
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("tie", [False, True])
def test_two_fsdp_ranks_gather_layer_by_layer_score_and_clip_like_one_unsharded_model(tmp_path, tie):
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_rank, args=(_free_port(), tie, out), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    plain = _plain(tie)
    assert got["is_fsdp"] and not is_fsdp(plain)
    chunks = got["chunks"]
    # The root's own weights, then one chunk per Block holding only that Block's.
    assert len(chunks) == CONFIG["n_layer"] + 1
    assert set(chunks[0]) == {"wte.weight", "norm_f.weight"} | (set() if tie else {"lm_head.weight"})
    for i, chunk in enumerate(chunks[1:]):
        assert chunk and all(k.startswith(f"blocks.{i}.") for k in chunk)
    # Converted chunk by chunk, they are the export of the unsharded model, tensor for tensor.
    hf, convert = hf_converter(plain.config, "test")
    streamed = dict(pair for chunk in chunks for pair in convert(chunk))
    _, whole = hf_tensors(plain.config, plain.state_dict(), "test")
    assert streamed.keys() == whole.keys()
    for key, tensor in whole.items():
        torch.testing.assert_close(streamed[key], tensor, msg=key, rtol=0, atol=0)
    torch.testing.assert_close(got["ours"], got["theirs"])
    # The norm of both ranks' shards together is the whole model's; clipping scales every shard alike.
    assert float(got["expected"]) > 0.5
    torch.testing.assert_close(got["norm"], got["expected"], rtol=1e-5, atol=1e-6)
    for name, grad in got["plain_grads"].items():
        torch.testing.assert_close(got["grads"][name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_a_plain_model_is_given_a_layer_at_a_time_too():
    """Without FSDP the chunks are the same cut of the (LoRA-merged) state dict: the root's weights, then each
    Block's, every weight once."""
    plain = _plain(False)
    chunks = list(weight_chunks(plain))
    assert len(chunks) == CONFIG["n_layer"] + 1
    assert {"wte.weight", "norm_f.weight", "lm_head.weight"} <= set(chunks[0])
    assert not any(k.startswith("blocks.") for k in chunks[0])
    for i, chunk in enumerate(chunks[1:]):
        assert chunk and all(k.startswith(f"blocks.{i}.") for k in chunk)
    merged = {k: v for chunk in chunks for k, v in chunk.items()}
    assert merged.keys() == plain.state_dict().keys()
