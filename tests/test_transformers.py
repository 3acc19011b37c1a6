"""transformers integration: tiny random-weight Llama / Mistral / Qwen2 models built here (no downloads).

CPU, fp32: logits of a left-padded prefill and of decode steps (dynamic and static cache) match eager
attention; greedy ``generate`` gives the same tokens; a compiled static-cache ``generate`` traces one
graph with no graph break; patch/unpatch, loading by name, ``device_map="auto"``; the example runs.
GPU (marked): fp16 logits against sdpa, compiled (inductor, CUDA graphs) static-cache generate, layers split
over 2 GPUs with a device_map.
"""

import functools
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    CompileConfig,
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    StaticCache,
)

from torch_flashinfer.integrations import transformers as tfi  # noqa: E402

NAME = tfi.ATTN_IMPLEMENTATION
ROOT = Path(__file__).resolve().parents[1]
SIZES = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
MODELS = {
    "llama": (LlamaConfig, LlamaForCausalLM, {}),
    # a window shorter than the prompts, so prefill and decode both cut keys off
    "mistral": (MistralConfig, MistralForCausalLM, {"sliding_window": 6}),
    # one full-attention layer and one sliding layer: two masks per forward
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {"use_sliding_window": True, "sliding_window": 5, "max_window_layers": 1}),
}
PADS = (0, 3, 7)  # left pads of the three prompts
PROMPT = 11
# transformers 5 renamed the cache argument of forward from past_key_values to cache
CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


def tiny_model(name: str, device="cpu", dtype=torch.float32, wide_head=True, **sizes):
    """A random-weight model with eager attention.

    ``wide_head``: lm_head weights of std 1 instead of 0.02: logits of std ~11 instead of ~0.2 and a
    median top-2 gap of ~2 instead of ~0.07 (hidden 128), so greedy tokens do not flip on rounding.
    """
    config_cls, model_cls, extra = MODELS[name]
    config = config_cls(**{**SIZES, **sizes}, **extra)
    torch.manual_seed(0)
    model = model_cls(config).eval()
    if wide_head:
        torch.nn.init.normal_(model.lm_head.weight, std=1.0)
    model.set_attn_implementation("eager")
    return model.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=None)
def cpu_model(name: str):
    return tiny_model(name)


def left_padded_batch(pads=PADS, length=PROMPT, vocab=SIZES["vocab_size"], device="cpu"):
    """input_ids (3..vocab, pads = 0) and the 2D attention mask of a left-padded batch."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (len(pads), length), generator=gen)
    mask = torch.ones(len(pads), length, dtype=torch.long)
    for row, pad in enumerate(pads):
        mask[row, :pad] = 0
        ids[row, :pad] = 0
    return ids.to(device), mask.to(device)


def run_steps(model, ids, mask, cache_kind: str, steps: int = 3):
    """Logits of a prefill and of ``steps`` decode steps fed fixed tokens: [(B, S, V), (B, 1, V), ...]."""
    batch, length = ids.shape
    if cache_kind == "static":
        cache = StaticCache(config=model.config, max_cache_len=length + steps + 5)
    else:
        cache = DynamicCache(config=model.config)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    gen = torch.Generator().manual_seed(2)
    new_tokens = torch.randint(3, model.config.vocab_size, (steps, batch, 1), generator=gen).to(ids.device)
    logits = []
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=True, **{CACHE_ARG: cache})
        logits.append(out.logits)
        for token in new_tokens:
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=-1)
            position_ids = position_ids[:, -1:] + 1
            out = model(input_ids=token, attention_mask=mask, position_ids=position_ids, use_cache=True,
                        **{CACHE_ARG: cache})
            logits.append(out.logits)
    return logits


def assert_steps_close(got, expected, mask, atol, rtol):
    """Prefill: the real tokens' logits (pad rows are never read); decode steps: every row."""
    valid = mask.bool()
    torch.testing.assert_close(got[0][valid].float(), expected[0][valid].float(), atol=atol, rtol=rtol)
    for step, (g, e) in enumerate(zip(got[1:], expected[1:])):
        torch.testing.assert_close(g.float(), e.float(), atol=atol, rtol=rtol, msg=lambda m: f"decode step {step}: {m}")


def greedy(model, ids, mask, cache_kind, new_tokens=12, **kwargs):
    return model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                          do_sample=False, cache_implementation=cache_kind, pad_token_id=0, **kwargs)


# ---------------------------------------------------------------------------------------- CPU, fp32


def test_nothing_patched_at_import():
    code = (
        "from transformers import AttentionInterface\n"
        "from transformers.masking_utils import AttentionMaskInterface\n"
        "from torch_flashinfer.integrations import transformers as tfi\n"
        "assert tfi.ATTN_IMPLEMENTATION not in AttentionInterface._global_mapping\n"
        "assert tfi.ATTN_IMPLEMENTATION not in AttentionMaskInterface._global_mapping\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_name_is_not_taken_for_a_flash_kernel():
    assert "flash" not in NAME and "/" not in NAME and "sdpa" not in NAME
    generic = pytest.importorskip("transformers.utils.generic")
    if hasattr(generic, "is_flash_attention_requested"):
        assert not generic.is_flash_attention_requested(requested_attention_implementation=NAME)


@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
@pytest.mark.parametrize("name", MODELS)
def test_left_padded_prefill_and_decode_logits_match_eager(name, cache_kind):
    model = cpu_model(name)
    ids, mask = left_padded_batch()
    expected = run_steps(model, ids, mask, cache_kind)
    with tfi.patched(model):
        got = run_steps(model, ids, mask, cache_kind)
    assert_steps_close(got, expected, mask, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_right_padded_forward_matches_eager(name):
    model = cpu_model(name)
    ids, mask = left_padded_batch()
    ids, mask = ids.flip(-1), mask.flip(-1)  # the pads now trail the tokens
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
        with tfi.patched(model):
            got = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
    valid = mask.bool()
    torch.testing.assert_close(got[valid], expected[valid], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
@pytest.mark.parametrize("name", MODELS)
def test_greedy_generate_matches_eager(name, cache_kind):
    model = cpu_model(name)
    ids, mask = left_padded_batch()
    expected = greedy(model, ids, mask, cache_kind)
    with tfi.patched(model):
        got = greedy(model, ids, mask, cache_kind)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_static_generate_is_one_graph(backend):
    """transformers' compiled decode (fullgraph) over our op: no graph break, no recompile per step.

    aot_eager runs the fake implementations through functionalization; inductor also lowers the op.
    """
    model = cpu_model("llama")
    ids, mask = left_padded_batch()
    expected = greedy(model, ids, mask, "static")
    compile_config = CompileConfig(fullgraph=True, backend=backend, mode=None)
    compile_config._compile_all_devices = True  # transformers compiles on GPUs only, unless told
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with tfi.patched(model):
        got = greedy(model, ids, mask, "static", compile_config=compile_config)
    assert torch.equal(got, expected)
    assert not torch._dynamo.utils.counters["graph_break"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_patch_unpatch_round_trip():
    model = tiny_model("llama")
    model.set_attn_implementation("sdpa")
    ids, mask = left_padded_batch()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        assert not tfi.is_patched(model)
        assert tfi.patch(model) is model and tfi.is_patched(model)
        assert model.config._attn_implementation == NAME
        assert all(layer.self_attn.config._attn_implementation == NAME for layer in model.model.layers)
        tfi.patch(model)  # patching twice changes nothing
        patched = model(input_ids=ids, attention_mask=mask).logits
        assert tfi.unpatch(model) is model and not tfi.is_patched(model)
        assert model.config._attn_implementation == "sdpa"
        tfi.unpatch(model)  # unpatching an unpatched model changes nothing
        after = model(input_ids=ids, attention_mask=mask).logits
        with tfi.patched(model):
            assert model.config._attn_implementation == NAME
        assert model.config._attn_implementation == "sdpa"
        tfi.patch(model)
        with tfi.patched(model):  # a patched model stays patched after the block
            pass
        assert tfi.is_patched(model)
        tfi.unpatch(model)
    valid = mask.bool()
    torch.testing.assert_close(patched[valid], before[valid], atol=1e-4, rtol=1e-4)
    assert torch.equal(after, before)


def test_load_by_name(tmp_path):
    """After register(): from_config, from_pretrained, and from_pretrained with device_map="auto"."""
    reference = cpu_model("llama")
    reference.save_pretrained(tmp_path)
    ids, mask = left_padded_batch()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).logits
    tfi.register()
    from_config = AutoModelForCausalLM.from_config(reference.config, attn_implementation=NAME)
    assert from_config.config._attn_implementation == NAME
    # device_map="auto" puts the model on a GPU when there is one: our CUDA kernels take fp16/bf16
    on_gpu = {"device_map": "auto", "dtype": torch.float16} if torch.cuda.is_available() else {"device_map": "auto"}
    for kwargs in ({}, on_gpu):
        model = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation=NAME, **kwargs).eval()
        assert model.config._attn_implementation == NAME
        with torch.no_grad():
            got = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float().cpu()
        tol = 4e-2 if model.dtype == torch.float16 else 1e-4
        torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], atol=tol, rtol=tol)


def test_custom_4d_mask_is_refused():
    model = cpu_model("llama")
    ids, _ = left_padded_batch()
    custom = torch.ones(ids.shape[0], 1, ids.shape[1], ids.shape[1], dtype=torch.bool).tril()
    with tfi.patched(model), torch.no_grad(), pytest.raises(ValueError, match="custom 4D masks"):
        model(input_ids=ids, attention_mask=custom)


def test_example_runs_tiny():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "llama_generate.py"), "--tiny"],
                            check=True, timeout=300, capture_output=True, text=True)
    assert "speed-up" in result.stdout and "tokens identical" in result.stdout


# ---------------------------------------------------------------------------------------- GPU, fp16

GPU_SIZES = dict(hidden_size=512, intermediate_size=1024, num_attention_heads=8, num_key_value_heads=2)


@pytest.mark.gpu
@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
@pytest.mark.parametrize("name", MODELS)
def test_gpu_fp16_logits_match_sdpa(name, cache_kind):
    """The tolerance of transformers' own flash-attention equivalence tests (4e-2), fp16, head_dim 64."""
    model = tiny_model(name, device="cuda", dtype=torch.float16, wide_head=False, **GPU_SIZES)
    model.set_attn_implementation("sdpa")
    ids, mask = left_padded_batch(pads=(0, 5, 40), length=97, device="cuda")
    expected = run_steps(model, ids, mask, cache_kind)
    with tfi.patched(model):
        got = run_steps(model, ids, mask, cache_kind)
    assert_steps_close(got, expected, mask, atol=4e-2, rtol=4e-2)


@pytest.mark.gpu
def test_gpu_compiled_static_generate(tmp_path):
    """generate with a static cache and transformers' compiled decode (inductor, reduce-overhead, fullgraph)."""
    tiny_model("llama", **GPU_SIZES).save_pretrained(tmp_path)
    tfi.register()
    model = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation=NAME, device_map="auto",
                                                 dtype=torch.float16).eval()
    ids, mask = left_padded_batch(pads=(0, 5, 40), length=97, device="cuda")
    expected = greedy(model, ids, mask, "static", new_tokens=16, disable_compile=True)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    got = greedy(model, ids, mask, "static", new_tokens=16, compile_config=CompileConfig(fullgraph=True))
    assert not torch._dynamo.utils.counters["graph_break"]
    assert torch.equal(got, expected)


def layer_split_device_map(config, first, second) -> dict:
    """accelerate's placement by module: embeddings and the first half of the layers on ``first``, the rest on
    ``second`` (accelerate moves the hidden states, masks and position embeddings between them)."""
    layers = config.num_hidden_layers
    device_map = {"model.embed_tokens": first, "model.rotary_emb": first, "model.norm": second, "lm_head": second}
    device_map.update({f"model.layers.{i}": first if i < layers // 2 else second for i in range(layers)})
    return device_map


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="splitting the layers over GPUs needs 2 GPUs")
@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
def test_gpu_layers_split_over_two_gpus_generate(tmp_path, cache_kind):
    """``device_map`` with half the layers on cuda:0 and half on cuda:1: greedy ``generate`` gives sdpa's tokens."""
    saved = tiny_model("llama", num_hidden_layers=4, **GPU_SIZES)
    saved.save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float16, attn_implementation="sdpa",
                                                 device_map=layer_split_device_map(saved.config, 0, 1)).eval()
    assert {p.device.index for p in model.model.layers[0].parameters()} == {0}
    assert {p.device.index for p in model.model.layers[-1].parameters()} == {1}
    ids, mask = left_padded_batch(pads=(0, 5, 40), length=97, device="cuda:0")
    expected = greedy(model, ids, mask, cache_kind, new_tokens=16, disable_compile=True)
    with tfi.patched(model):
        got = greedy(model, ids, mask, cache_kind, new_tokens=16, disable_compile=True)
    assert torch.equal(got, expected)
