"""Command line: ``python -m torch_flashinfer.benchmark`` (or ``torch-flashinfer-bench``).

    python -m torch_flashinfer.benchmark --suite seed --out benchmarks/results/h100
    python -m torch_flashinfer.benchmark --suite quick --device cpu --out /tmp/bench

Writes ``OUT/<suite>.json`` and ``OUT/<suite>_<scenario>.png``, both after every scenario, so an
interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import torch

from . import backends as backends_module
from . import report, suites, timing
from .runner import run_case
from .schema import BACKENDS, DTYPES


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m torch_flashinfer.benchmark",
        description="Time torch_flashinfer's attention against PyTorch's backends in one process; "
                    "print a table, save JSON and one chart per scenario.")
    parser.add_argument("--suite", choices=suites.SUITES, default="quick",
                        help="seed: the seed study's five scenarios; llm: PERFORMANCE.md's shapes; "
                             "quick: a small subset (tiny shapes on CPU). Default: quick")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu runs our CPU reference and SDPA's CPU kernels. Default: cuda if available")
    parser.add_argument("--out", type=Path, default=Path("benchmark_results"),
                        help="directory for <suite>.json and <suite>_<scenario>.png. Default: ./benchmark_results")
    parser.add_argument("--dtype", choices=DTYPES, default="float16")
    parser.add_argument("--heads-q", type=int, help="query heads of the seed and quick suites (default 32; 4 on CPU)")
    parser.add_argument("--heads-k", type=int, help="K/V heads of the seed and quick suites (default: --heads-q)")
    parser.add_argument("--head-dim", type=int, help="head dim of the seed and quick suites (default 128; 64 on CPU)")
    parser.add_argument("--backends", type=_names, default=BACKENDS,
                        help=f"comma-separated subset of {','.join(BACKENDS)} (ours runs every algo). Default: all")
    parser.add_argument("--scenarios", type=_names, help="comma-separated scenarios of the suite to run. Default: all")
    parser.add_argument("--iters", type=int, help="timed calls per measurement. Default: 100 on cuda, 10 on cpu")
    parser.add_argument("--rounds", type=int,
                        help="times each backend of a case is measured, every other round in reverse order; each "
                             "keeps its lowest median. Default: 2 on cuda (a backend's place in the order moved it "
                             "by up to 13 %% on an H100), 1 on cpu")
    parser.add_argument("--replot", type=Path, metavar="JSON",
                        help="measure nothing: redraw the charts of --suite from this JSON into --out")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.suite == "llm" and (args.heads_q or args.heads_k or args.head_dim):
        parser.error("the llm suite's heads and head dims are PERFORMANCE.md's; only --dtype applies")
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {', '.join(sorted(unknown))}; choose from {', '.join(BACKENDS)}")
    args.iters = args.iters or (100 if args.device == "cuda" else 10)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds: at least 1")
    args.rounds = args.rounds or (2 if args.device == "cuda" else 1)
    return args


def replot(args: argparse.Namespace) -> int:
    """Charts from a saved run (e.g. one whose PNGs did not come back from the GPU machine)."""
    import json

    saved = json.loads(args.replot.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    scenarios = suites.build(args.suite, "cuda", args.heads_q, args.heads_k, args.head_dim, args.dtype)
    for scenario in scenarios:
        rows = [row for row in saved["rows"] if row["scenario"] == scenario.name]
        if rows:
            report.plot(args.out / f"{args.suite}_{scenario.name}.png", scenario, rows,
                        f"{args.suite} / {scenario.name}: {saved['device']['name']}, {args.dtype}", saved["copy_gbps"])
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.replot:
        return replot(args)
    device = torch.device(args.device)
    scenarios = suites.build(args.suite, device.type, args.heads_q, args.heads_k, args.head_dim, args.dtype)
    if args.scenarios:
        unknown = set(args.scenarios) - {scenario.name for scenario in scenarios}
        if unknown:
            raise SystemExit(f"unknown scenarios of the {args.suite} suite: {', '.join(sorted(unknown))}")
        scenarios = [scenario for scenario in scenarios if scenario.name in args.scenarios]
    backends = backends_module.available(args.backends)
    args.out.mkdir(parents=True, exist_ok=True)

    device_info = timing.device_info(device)
    copy_gbps = timing.copy_gbps(device)
    print(f"{device_info['name']} | torch {device_info['torch']} | CUDA {device_info['cuda']} | "
          f"cuDNN {device_info['cudnn']} | {args.dtype} | device copy {copy_gbps:.0f} GB/s")
    progress = report.Progress(sum(len(scenario.cases) for scenario in scenarios))
    rows: list[dict] = []
    for scenario in scenarios:
        scenario_rows = []
        for case in scenario.cases:
            progress.step(f"{scenario.name}: {case.label()}")
            scenario_rows += run_case(case, backends, device, args.iters, args.rounds)
        rows += scenario_rows
        report.clear_status()
        print(report.format_table(scenario, scenario_rows), flush=True)
        report.write_json(args.out / f"{args.suite}.json", device_info, copy_gbps, rows)
        report.plot(args.out / f"{args.suite}_{scenario.name}.png", scenario, scenario_rows,
                    f"{args.suite} / {scenario.name}: {device_info['name']}, {args.dtype}", copy_gbps)
    print(f"wrote {args.out / (args.suite + '.json')} and {len(scenarios)} charts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
