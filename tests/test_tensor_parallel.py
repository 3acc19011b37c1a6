"""Tensor parallelism (transformers ``tp_plan="auto"``) on our attention: ``examples/tp_generate.py`` under torchrun.

Two processes, each holding half of the heads of a tiny LLaMA; rank 0 checks the logits of the prefill
and of greedy decode steps against the same weights in one process (ours and sdpa), and that the
model really was sharded. CPU: gloo, fp32. GPU (marked, 2 GPUs): NCCL, fp16.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tp_generate.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_example(nproc: int, *flags: str, hide_gpus: bool = False) -> str:
    """Runs the example under ``torch.distributed.run``; returns its output, fails the test on a non-zero exit.

    ``hide_gpus``: the example then runs gloo on the CPU (transformers too puts its mesh on the CPU when
    no GPU is visible), also on a GPU machine.
    """
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
               f"--master-port={free_port()}", str(EXAMPLE), "--tiny", *flags]
    # NVLink multicast off for every multi-GPU run (the example sets it too, before NCCL starts)
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
    if hide_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_tensor_parallel_two_cpu_processes_gloo(cache):
    out = run_example(2, *(["--static-cache"] if cache == "static" else []), hide_gpus=True)
    assert "2 x cpu (gloo)" in out
    assert "query heads per rank: 2 of 4 ok" in out
    assert out.count(" ok; greedy tokens identical") == 2  # against ours and sdpa in one process
    assert "logits match" in out


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="tensor parallelism over NCCL needs 2 GPUs")
def test_tensor_parallel_two_gpus_nccl():
    out = run_example(2)
    assert "2 x cuda (nccl)" in out
    assert "query heads per rank: 2 of 4 ok" in out
    assert "logits match" in out


@pytest.mark.gpu
def test_tp_example_on_one_gpu():
    """The example's 1-GPU baseline (no sharding, NCCL with one rank): its GPU path runs on any CUDA machine."""
    out = run_example(1)
    assert "1 x cuda (nccl)" in out
    assert "query heads per rank: 4 of 4 ok" in out
    assert "logits match" in out
