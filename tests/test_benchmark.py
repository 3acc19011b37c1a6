"""The benchmark CLI on CPU with tiny shapes (seconds): JSON checked field by field, charts written,
refusing backends recorded as n/a, and the FLOP / byte formulas on hand-computed examples."""

import functools
import json
import math
from dataclasses import replace

import pytest
import torch

from torch_flashinfer import _kernels
from torch_flashinfer.benchmark.__main__ import main
from torch_flashinfer.benchmark import runner
from torch_flashinfer.benchmark.backends import Backend, Parts, sdpa
from torch_flashinfer.benchmark.report import peer_ratios
from torch_flashinfer.benchmark.runner import run_case
from torch_flashinfer.benchmark.schema import (BACKENDS, DEVICE_FIELDS, ROW_FIELDS, Case, bytes_moved, case_of,
                                               flops, make_row)

QUICK_SCENARIOS = {"prefill_seq", "decode_seq", "hybrid", "paged_decode"}
HYBRID_ONLY = {"aten_varlen_flash", "prefill_plus_decode"}
SDPA = {"sdpa_flash", "sdpa_cudnn", "sdpa_efficient", "sdpa_math"}


@pytest.fixture
def one_thread():
    """The CPU reference of tiny shapes is fastest, and steadiest, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check_row(row):
    assert tuple(row) == ROW_FIELDS
    assert row["scenario"] in QUICK_SCENARIOS
    for field in ("batch", "heads_q", "heads_k", "seqlen_q", "seqlen_k", "head_dim"):
        assert type(row[field]) is int and row[field] > 0, field
    assert row["heads_q"] % row["heads_k"] == 0
    assert type(row["causal"]) is bool
    assert row["dtype"] == "float16"
    assert (row["page_size"] is not None) == (row["scenario"] == "paged_decode")
    assert row["page_size"] is None or type(row["page_size"]) is int
    assert (row["prefill_fraction"] is not None) == (row["scenario"] == "hybrid")
    assert row["prefill_fraction"] is None or 0.0 <= row["prefill_fraction"] <= 1.0
    assert row["backend"] in BACKENDS
    assert (row["algo"] is not None) == (row["backend"] == "torch_flashinfer")
    if row["backend"] in HYBRID_ONLY:
        assert row["scenario"] == "hybrid"
    if row["backend"] in SDPA:
        assert row["scenario"] != "hybrid"
    measured = [row[field] is not None for field in ("ms", "tflops", "gbps")]
    assert all(measured) or not any(measured)
    if row["ms"] is not None:
        assert all(type(row[field]) is float and row[field] > 0 for field in ("ms", "tflops", "gbps"))
        seconds = row["ms"] * 1e-3
        case = case_of(row)
        assert math.isclose(row["tflops"], flops(case) / seconds / 1e12, rel_tol=2e-3)
        assert math.isclose(row["gbps"], bytes_moved(case) / seconds / 1e9, rel_tol=2e-3)


def test_cli_quick_cpu_writes_json_and_charts(tmp_path, one_thread):
    assert main(["--suite", "quick", "--device", "cpu", "--out", str(tmp_path), "--iters", "2"]) == 0
    result = json.loads((tmp_path / "quick.json").read_text())
    assert set(result) == {"device", "copy_gbps", "rows"}
    assert tuple(result["device"]) == DEVICE_FIELDS
    assert type(result["device"]["name"]) is str and result["device"]["torch"] == torch.__version__
    assert result["device"]["cuda"] is None and result["device"]["cudnn"] is None
    assert type(result["copy_gbps"]) is float and result["copy_gbps"] > 0

    rows = result["rows"]
    for row in rows:
        _check_row(row)
    assert {row["scenario"] for row in rows} == QUICK_SCENARIOS
    ours = [row for row in rows if row["backend"] == "torch_flashinfer"]
    assert {row["algo"] for row in ours} == {"auto", *_kernels.FAMILIES}
    assert all(row["ms"] is not None for row in ours)  # the CPU reference runs every case
    by_backend = {name: [row["ms"] for row in rows if row["backend"] == name] for name in BACKENDS}
    assert all(ms is not None for ms in by_backend["sdpa_math"] + by_backend["prefill_plus_decode"])
    # no CPU kernel: recorded as n/a, not a crash
    assert by_backend["sdpa_cudnn"] and all(ms is None for ms in by_backend["sdpa_cudnn"])
    assert by_backend["aten_varlen_flash"] and all(ms is None for ms in by_backend["aten_varlen_flash"])
    # the read yardstick: every decode case, no other
    read = [row for row in rows if row["backend"] == "kv_read"]
    assert read and all(row["ms"] is not None and row["seqlen_q"] <= _kernels.DECODE_MAX_SEQLEN_Q
                        and row["prefill_fraction"] is None for row in read)
    assert {row["scenario"] for row in read} == {"decode_seq", "paged_decode"}

    for scenario in QUICK_SCENARIOS:
        assert (tmp_path / f"quick_{scenario}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_refusing_backend_is_recorded_as_na(one_thread):
    case = Case("t", batch=1, heads_q=2, heads_k=1, seqlen_q=4, seqlen_k=4, head_dim=32, causal=True, dtype="float32")

    def refuses_when_made(case, inputs):
        raise ValueError("shape not supported")

    def refuses_when_called(case, inputs):
        def call():
            raise RuntimeError("no kernel for this shape")
        return call

    def every_case(case):
        return True

    backends = [Backend("sdpa_cudnn", None, refuses_when_made, every_case),
                Backend("sdpa_efficient", None, refuses_when_called, every_case),
                Backend("sdpa_math", None, functools.partial(sdpa, backend="sdpa_math"), every_case),
                Backend("prefill_plus_decode", None, refuses_when_made, lambda case: case.hybrid)]
    rows = run_case(case, backends, torch.device("cpu"), iters=1)
    assert [row["backend"] for row in rows] == ["sdpa_cudnn", "sdpa_efficient", "sdpa_math"]  # last: not hybrid
    assert [(row["ms"], row["tflops"], row["gbps"]) for row in rows[:2]] == [(None, None, None)] * 2
    assert rows[2]["ms"] > 0


def test_parts_are_timed_alone_and_added(monkeypatch):
    """prefill_plus_decode's row is the sum of its calls' medians, each timed by itself."""
    timed = []

    def fake_median_ms(fn, device, iters):
        timed.append(fn)
        return fn.ms

    def call_of(ms):
        def call():
            return ms
        call.ms = ms
        return call

    prefill, decode = call_of(0.25), call_of(0.5)
    monkeypatch.setattr(runner.timing, "median_ms", fake_median_ms)
    case = Case("t", batch=4, heads_q=2, heads_k=1, seqlen_q=8, seqlen_k=8, head_dim=16, causal=True,
                dtype="float32", prefill_fraction=0.5)
    backends = [Backend("prefill_plus_decode", None, lambda case, x: Parts([prefill, decode]), lambda case: True),
                Backend("sdpa_math", None, lambda case, x: call_of(0.125), lambda case: True)]
    rows = run_case(case, backends, torch.device("cpu"), iters=1)
    assert [row["ms"] for row in rows] == [0.75, 0.125]
    assert timed[:2] == [prefill, decode]
    assert Parts([prefill, decode])() == [0.25, 0.5]


def test_rounds_reverse_the_order_and_keep_each_lowest_median(monkeypatch):
    """Round 2 times the backends last to first; each row keeps its lower median; a refusal is timed once."""
    timed = []
    medians = {"sdpa_flash": [3.0, 2.0], "sdpa_math": [1.0, 4.0]}  # per backend, round by round

    def fake_median_ms(fn, device, iters):
        timed.append(fn.name)
        return medians[fn.name].pop(0)

    def named(name):
        def make(case, x):
            def call():
                return None
            call.name = name
            return call
        return Backend(name, None, make, lambda case: True)

    def refuses_when_made(case, x):
        raise RuntimeError("no kernel for this shape")

    monkeypatch.setattr(runner.timing, "median_ms", fake_median_ms)
    case = Case("t", batch=1, heads_q=2, heads_k=1, seqlen_q=8, seqlen_k=8, head_dim=16, causal=True, dtype="float32")
    backends = [named("sdpa_flash"), Backend("sdpa_cudnn", None, refuses_when_made, lambda case: True), named("sdpa_math")]
    rows = run_case(case, backends, torch.device("cpu"), iters=1, rounds=2)
    assert timed == ["sdpa_flash", "sdpa_math", "sdpa_math", "sdpa_flash"]
    assert [row["ms"] for row in rows] == [2.0, None, 1.0]


def test_flop_and_byte_formulas_by_hand():
    prefill = Case("t", batch=2, heads_q=4, heads_k=2, seqlen_q=8, seqlen_k=8, head_dim=16, causal=True,
                   dtype="float16")
    assert flops(prefill) == 16384  # 2 seqs * 4*8*8*4*16 = 32768, halved: causal with sq == sk
    assert bytes_moved(prefill) == 6144  # fp16: q, o 2*8*4*16 = 1024 elements each; k, v 2*8*2*16 = 512 each

    decode = replace(prefill, seqlen_q=1, seqlen_k=100)
    assert flops(decode) == 51200  # 2 * 4*1*100*4*16, not halved (sq != sk)
    assert bytes_moved(decode) == 26112  # 2 * (q, o 2*1*4*16 = 128 + k, v 2*100*2*16 = 6400)

    hybrid = Case("t", batch=4, heads_q=2, heads_k=1, seqlen_q=8, seqlen_k=8, head_dim=16, causal=True,
                  dtype="bfloat16", prefill_fraction=0.5)
    assert hybrid.seqlens_q() == [8, 8, 1, 1]
    assert flops(hybrid) == 10240  # prefill 2 * 4*8*8*2*16 / 2 = 8192, decode 2 * 4*1*8*2*16 = 2048
    assert bytes_moved(hybrid) == 4352  # 2 bytes * (q, o 18*2*16 = 576 each + k, v 4*8*1*16 = 512 each)

    row = make_row(prefill, "sdpa_flash", None, ms=0.001)
    assert (row["tflops"], row["gbps"]) == (0.01638, 6.144)  # 16384 / 1e-6 s / 1e12, 6144 / 1e-6 s / 1e9 (4 digits)
    assert make_row(prefill, "sdpa_flash", None, ms=None)["tflops"] is None


def test_peer_ratio_is_best_peer_over_row():
    case = Case("t", batch=1, heads_q=2, heads_k=2, seqlen_q=4, seqlen_k=4, head_dim=32, causal=False, dtype="float16")
    rows = [make_row(case, "torch_flashinfer", "auto", 1.0), make_row(case, "sdpa_flash", None, 2.0),
            make_row(case, "sdpa_cudnn", None, 4.0), make_row(case, "sdpa_math", None, None)]
    assert peer_ratios(rows) == [2.0, 1.0, 0.5, None]
    # a yardstick is no peer, however fast
    assert peer_ratios(rows + [make_row(case, "kv_read", None, 0.1)]) == [2.0, 1.0, 0.5, None, 20.0]
