"""``generate`` on a LLaMA-3-8B-shaped model with sdpa and with torch_flashinfer attention, side by side.

Random weights (or a local checkpoint), fp16; prints the prefill latency, the decode tokens/s and the
speed-up of ours over sdpa, and whether both produced the same greedy tokens::

    python examples/llama_generate.py                          # 16k context, static cache + compile
    python examples/llama_generate.py --context 4096 --batch 8 --no-compile
    python examples/llama_generate.py --model /path/to/Meta-Llama-3-8B
    python examples/llama_generate.py --tiny                   # tiny shapes on the CPU (smoke test)

Shape: hidden 4096, 32 query heads, 8 K/V heads (head_dim 128), intermediate 14336, vocab 128256,
with ``--layers`` layers (default 4 of the 32, so it fits beside a 16k-token cache on any GPU). A
static cache makes transformers compile the decode step (torch.compile, mode "reduce-overhead": CUDA
graphs) on GPUs; ``--no-compile`` or ``--dynamic-cache`` run it eagerly.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

from torch_flashinfer.integrations import transformers as tfi

LLAMA3_8B = dict(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
                 vocab_size=128256, rope_theta=500000.0, max_position_embeddings=131072, rms_norm_eps=1e-5)
TINY = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, intermediate_size=256, vocab_size=512,
            max_position_embeddings=1024)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="local checkpoint directory (default: random LLaMA-3-8B-shaped weights)")
    parser.add_argument("--context", type=int, default=16384, help="prompt tokens per sequence")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per sequence")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the random-weight model")
    parser.add_argument("--static-cache", action=argparse.BooleanOptionalAction, default=True,
                        help="StaticCache (default) or DynamicCache")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compiled decode with a static cache (default: on for CUDA, off for CPU)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after a warm-up; the best is kept")
    parser.add_argument("--device", default=None, help="default: cuda when available (cpu with --tiny)")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny shapes, 2 layers, fp32, 64-token context: a smoke test that runs on the CPU")
    args = parser.parse_args(argv)
    if args.tiny:
        args.context, args.new_tokens, args.batch, args.layers, args.repeats = 64, 8, 2, 2, 1
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if args.compile is None:
        args.compile = args.device.startswith("cuda")
    return args


@contextmanager
def default_dtype(dtype: torch.dtype):
    """Build modules directly in ``dtype`` (no fp32 copy of 8B-shaped weights first)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_model(args: argparse.Namespace):
    dtype = torch.float32 if args.tiny else torch.float16
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, device_map=args.device)
    else:
        config = LlamaConfig(**(TINY if args.tiny else LLAMA3_8B), num_hidden_layers=args.layers)
        torch.manual_seed(0)
        with torch.device(args.device), default_dtype(dtype):
            model = LlamaForCausalLM(config)
    model.set_attn_implementation("sdpa")
    return model.eval()


class StepClock(LogitsProcessor):
    """Records when the logits of each step are ready: after the prefill, then after each decode step."""

    def __init__(self, device: str):
        self.device = device
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        return scores


def timed_generate(model, ids: torch.Tensor, args: argparse.Namespace) -> tuple[torch.Tensor, float, float]:
    """Greedy ``generate``; returns (tokens, prefill seconds, decode tokens/s)."""
    clock = StepClock(args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    tokens = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
        do_sample=False, pad_token_id=0, logits_processor=LogitsProcessorList([clock]),
        cache_implementation="static" if args.static_cache else "dynamic", disable_compile=not args.compile)
    prefill = clock.times[0] - start
    decode_tokens_per_s = ids.shape[0] * (len(clock.times) - 1) / (clock.times[-1] - clock.times[0])
    return tokens, prefill, decode_tokens_per_s


def measure(model, ids: torch.Tensor, args: argparse.Namespace) -> dict:
    """A warm-up run (kernel builds, compilation), then the best of ``args.repeats`` timed runs."""
    timed_generate(model, ids, args)
    runs = [timed_generate(model, ids, args) for _ in range(args.repeats)]
    return {"tokens": runs[0][0], "prefill_s": min(r[1] for r in runs), "decode_tok_s": max(r[2] for r in runs)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    model = build_model(args)
    torch.manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (args.batch, args.context), device=args.device)
    results = {"sdpa": measure(model, ids, args)}
    with tfi.patched(model):
        results[tfi.ATTN_IMPLEMENTATION] = measure(model, ids, args)

    if args.model:
        what = args.model
    elif args.tiny:
        what = "tiny LLaMA, random weights"
    else:
        what = f"LLaMA-3-8B-shaped, {args.layers} layers, random weights"
    print(f"{what}, {model.dtype}, {args.device} | batch {args.batch}, context {args.context}, "
          f"{args.new_tokens} new tokens, {'static' if args.static_cache else 'dynamic'} cache, "
          f"{'compiled' if args.compile else 'eager'} decode")
    print(f"{'attention':<16}{'prefill ms':>12}{'decode tok/s':>15}")
    for name, r in results.items():
        print(f"{name:<16}{r['prefill_s'] * 1e3:>12.1f}{r['decode_tok_s']:>15.1f}")
    sdpa, ours = results["sdpa"], results[tfi.ATTN_IMPLEMENTATION]
    same = (sdpa["tokens"] == ours["tokens"])[:, args.context:].float().mean().item()
    print(f"speed-up over sdpa: prefill {sdpa['prefill_s'] / ours['prefill_s']:.2f}x, "
          f"decode {ours['decode_tok_s'] / sdpa['decode_tok_s']:.2f}x; greedy tokens identical: {same:.0%}")
    return results


if __name__ == "__main__":
    main()
