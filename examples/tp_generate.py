"""Tensor-parallel ``generate`` on torch_flashinfer attention: transformers ``tp_plan="auto"`` under torchrun.

Each rank holds 1/N of the attention heads and of the MLP (transformers' LLaMA plan: q/k/v, gate and up
projections split by output columns, o and down projections by input rows and all-reduced, lm_head
gathered) and runs our attention on its own heads, on its own device. One process per GPU with NCCL
when CUDA is available (fp16), else one CPU process per rank with gloo (fp32)::

    torchrun --nproc-per-node 2 examples/tp_generate.py           # 2 GPUs, LLaMA-3-8B-shaped, 4 layers
    torchrun --nproc-per-node 1 examples/tp_generate.py           # the same on 1 GPU (no TP): the baseline
    CUDA_VISIBLE_DEVICES= torchrun --nproc-per-node 2 examples/tp_generate.py --tiny   # CPU, gloo, tiny shapes
    torchrun --nproc-per-node 2 examples/tp_generate.py --model /path/to/Meta-Llama-3-8B

Rank 0 checks the logits of the prefill (last prompt position) and of the greedy decode steps against
the same weights in one process, without TP, with our attention and with sdpa (tolerance: 1e-4 in fp32,
4e-2 in fp16), then times ``generate`` with our attention and with sdpa, both tensor-parallel. Exits with
status 1 when the logits differ.

Random weights (seeded) are built once by rank 0 and saved to a temporary checkpoint that every rank
loads with ``tp_plan="auto"``, so all ranks shard the very same weights.
"""

from __future__ import annotations

import os

# NVLink multicast (NVLS) stays off: on a shared multi-GPU host a program that uses it can take the
# host's GPUs out of service. NCCL and PyTorch's symmetric memory read these when a communicator is
# created, so they are set before torch.distributed is even imported.
os.environ["NCCL_NVLS_ENABLE"] = "0"
os.environ["TORCH_SYMM_MEM_DISABLE_MULTICAST"] = "1"
os.environ["NVSHMEM_DISABLE_NVLS"] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessor,
    LogitsProcessorList,
)

from torch_flashinfer.integrations import transformers as tfi  # noqa: E402

LLAMA3_8B = dict(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
                 vocab_size=128256, rope_theta=500000.0, max_position_embeddings=131072, rms_norm_eps=1e-5)
TINY = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, intermediate_size=256, vocab_size=512,
            max_position_embeddings=1024)
# fp32: only the order of the sums differs (per-rank partial sums, all-reduced; decode steps against
# one forward over the whole sequence);
# fp16: the tolerance of transformers' flash-attention equivalence tests, as in tests/test_transformers.py
TOLERANCE = {torch.float32: 1e-4, torch.float16: 4e-2}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="local checkpoint directory (default: random LLaMA-3-8B-shaped weights)")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the random-weight model")
    parser.add_argument("--context", type=int, default=16384, help="prompt tokens per sequence")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per sequence when timing")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--check-steps", type=int, default=4,
                        help="greedy steps whose logits are checked (the first is the prefill's)")
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                        help="check against the model in one process (needs the whole model to fit rank 0's device)")
    parser.add_argument("--static-cache", action="store_true",
                        help="StaticCache (on GPUs transformers then compiles the decode step); "
                             "default DynamicCache, eager decode")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after a warm-up; the best is kept")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, 2 layers, 64-token context: a smoke test")
    args = parser.parse_args(argv)
    if args.tiny:
        args.layers, args.context, args.new_tokens, args.batch, args.repeats = 2, 64, 8, 2, 1
    return args


def init_distributed() -> torch.device:
    """The process group (NCCL + this rank's GPU, or gloo on the CPU); returns this rank's device.

    transformers would create it too, from the accelerator it detects; creating it here keeps the
    choice visible and binds the GPU before NCCL starts. transformers then builds its mesh on it.
    """
    if "RANK" not in os.environ:
        sys.exit(f"run this under torchrun, e.g.: torchrun --nproc-per-node 2 {' '.join(sys.argv)}")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return device


def tensor_parallel_kwargs() -> dict:
    """``from_pretrained`` arguments for the model's own TP plan over all ranks.

    transformers >= 5.17 takes ``distributed_config=DistributedConfig(tp_plan="auto")`` and warns that a
    bare ``tp_plan="auto"`` is going away; 4.5x only knows ``tp_plan="auto"``.
    """
    try:
        from transformers.distributed import DistributedConfig
    except ImportError:
        DistributedConfig = None
    if DistributedConfig is not None and "tp_plan" in {f.name for f in dataclasses.fields(DistributedConfig)}:
        return {"distributed_config": DistributedConfig(tp_plan="auto")}
    return {"tp_plan": "auto"}


def save_random_model(args: argparse.Namespace, dtype: torch.dtype, device: torch.device, path: str) -> None:
    config = LlamaConfig(**(TINY if args.tiny else LLAMA3_8B), num_hidden_layers=args.layers)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in fp16 directly: no fp32 copy of 8B-shaped weights first
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(path)


def checkpoint_path(args: argparse.Namespace, dtype: torch.dtype, device: torch.device) -> tuple[str, bool]:
    """The checkpoint every rank loads, and whether it is a temporary one (rank 0 deletes it)."""
    if args.model:
        return args.model, False
    path = [tempfile.mkdtemp(prefix="tp_generate_") if dist.get_rank() == 0 else None]
    if dist.get_rank() == 0:
        save_random_model(args, dtype, device, path[0])
    dist.broadcast_object_list(path, src=0)  # after rank 0 wrote it: the other ranks wait here
    return path[0], True


def load_tensor_parallel(path: str, dtype: torch.dtype, device: torch.device):
    """The model sharded over all ranks, with our attention; one process: the whole model on ``device``."""
    tfi.register()
    if dist.get_world_size() == 1:
        placement = {"device_map": device}
    else:
        placement = tensor_parallel_kwargs()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=tfi.ATTN_IMPLEMENTATION,
                                                 **placement)
    return model.eval()


class StepClock(LogitsProcessor):
    """Records when the logits of each step are ready: after the prefill, then after each decode step."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.times.append(time.perf_counter())
        return scores


def generate(model, ids: torch.Tensor, new_tokens: int, static_cache: bool, **kwargs):
    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                          cache_implementation="static" if static_cache else "dynamic", **kwargs)


def timed_generate(model, ids: torch.Tensor, args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """(prefill seconds, decode tokens/s) of one greedy ``generate``, as rank 0 sees it."""
    clock = StepClock(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    generate(model, ids, args.new_tokens, args.static_cache, logits_processor=LogitsProcessorList([clock]))
    decode_tokens_per_s = ids.shape[0] * (len(clock.times) - 1) / (clock.times[-1] - clock.times[0])
    return clock.times[0] - start, decode_tokens_per_s


def measure(model, ids: torch.Tensor, args: argparse.Namespace, device: torch.device) -> dict:
    """A warm-up run (kernel builds, compilation), then the best of ``args.repeats`` timed runs."""
    timed_generate(model, ids, args, device)
    runs = [timed_generate(model, ids, args, device) for _ in range(args.repeats)]
    return {"prefill_s": min(r[0] for r in runs), "decode_tok_s": max(r[1] for r in runs)}


def local_query_heads(model) -> int:
    """Query heads this rank computes, from its shard of layer 0's q_proj (a DTensor when sharded)."""
    attention = model.model.layers[0].self_attn
    weight = attention.q_proj.weight
    local = weight.to_local() if hasattr(weight, "to_local") else weight
    return local.shape[0] // attention.head_dim


def check_against_reference(path: str, dtype: torch.dtype, device: torch.device, sequences: torch.Tensor,
                            step_logits: torch.Tensor) -> bool:
    """Rank 0: the tensor-parallel logits against the same weights in one process, ours and sdpa.

    ``sequences``: (batch, prompt + steps) tokens the TP model generated greedily; ``step_logits``:
    (batch, steps, vocab) its logits for them: the prefill's last position, then each decode step.
    One forward of the reference over ``sequences[:, :-1]`` gives the logits of the same positions.
    """
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=device,
                                                     attn_implementation=tfi.ATTN_IMPLEMENTATION).eval()
    steps = step_logits.shape[1]
    tol = TOLERANCE[dtype]
    scale = step_logits.float().abs().max().item()
    ok = True
    for name in (tfi.ATTN_IMPLEMENTATION, "sdpa"):
        reference.set_attn_implementation(name)
        with torch.no_grad():
            expected = reference(input_ids=sequences[:, :-1], logits_to_keep=steps).logits.float()  # [B, steps, V]
        got = step_logits.float()
        close = torch.allclose(got, expected, atol=tol, rtol=tol)
        same = (expected.argmax(-1) == sequences[:, -steps:]).float().mean().item()
        print(f"logits vs 1 process, {name:<14}: max |diff| {(got - expected).abs().max().item():.2e} "
              f"(max |logit| {scale:.2f}, tolerance {tol:g}) {'ok' if close else 'MISMATCH'}; "
              f"greedy tokens identical: {same:.0%}")
        ok &= close
    del reference
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return ok


def run(args: argparse.Namespace, path: str, dtype: torch.dtype, device: torch.device) -> bool:
    """Shards the checkpoint, checks its logits (rank 0), times ours and sdpa; whether all went right."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    model = load_tensor_parallel(path, dtype, device)
    heads_q, heads_k = model.config.num_attention_heads, model.config.num_key_value_heads
    if heads_k % world_size:
        sys.exit(f"{heads_k} key/value heads do not split over {world_size} ranks")
    # a model that silently stayed whole on every rank would pass the logits check
    sharded = local_query_heads(model) == heads_q // world_size

    gen = torch.Generator().manual_seed(1)  # on the CPU: the same prompt on every rank
    ids = torch.randint(3, model.config.vocab_size, (args.batch, args.context), generator=gen).to(device)
    logits_ok = True
    if args.reference:
        out = generate(model, ids, args.check_steps, args.static_cache, output_logits=True,
                       return_dict_in_generate=True)
        if rank == 0:
            logits_ok = check_against_reference(path, dtype, device, out.sequences, torch.stack(out.logits, dim=1))
        del out

    results = {tfi.ATTN_IMPLEMENTATION: measure(model, ids, args, device)}
    model.set_attn_implementation("sdpa")
    results["sdpa"] = measure(model, ids, args, device)

    if rank == 0:
        what = args.model or ("tiny LLaMA" if args.tiny else f"LLaMA-3-8B-shaped, {args.layers} layers") + \
            ", random weights"
        print(f"{what}, {dtype}, {world_size} x {device.type} ({dist.get_backend()}) | batch {args.batch}, "
              f"context {args.context}, {args.new_tokens} new tokens, "
              f"{'static' if args.static_cache else 'dynamic'} cache")
        print(f"query heads per rank: {local_query_heads(model)} of {heads_q} {'ok' if sharded else 'NOT SHARDED'}")
        print(f"{'attention (TP)' if world_size > 1 else 'attention':<16}{'prefill ms':>12}{'decode tok/s':>15}")
        for name, r in results.items():
            print(f"{name:<16}{r['prefill_s'] * 1e3:>12.1f}{r['decode_tok_s']:>15.1f}")
        sdpa, ours = results["sdpa"], results[tfi.ATTN_IMPLEMENTATION]
        print(f"speed-up over sdpa: prefill {sdpa['prefill_s'] / ours['prefill_s']:.2f}x, "
              f"decode {ours['decode_tok_s'] / sdpa['decode_tok_s']:.2f}x")
        if world_size > 1:
            print(f"for the 1-{device.type.upper()} numbers: torchrun --nproc-per-node 1 {' '.join(sys.argv)}")
        print("logits match" if logits_ok else "LOGITS MISMATCH")
    return logits_ok and sharded


def main(argv=None) -> int:
    args = parse_args(argv)
    device = init_distributed()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    path, temporary = checkpoint_path(args, dtype, device)
    try:
        ok = run(args, path, dtype, device)
    finally:
        if temporary and dist.get_rank() == 0:
            shutil.rmtree(path, ignore_errors=True)
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
