"""What a run shows and saves: progress and notes on stderr, a table per scenario with each row's
ratio to the best peer, the JSON file, and one line chart per scenario."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Optional

from .schema import CASE_FIELDS, YARDSTICKS, case_of
from .suites import Scenario

OURS = "torch_flashinfer"  # every other backend but the yardsticks is a peer
_AXIS_LABELS = {"seqlen_q": "sequence length", "seqlen_k": "keys per sequence (seqlen_k)", "batch": "batch",
                "prefill_fraction": "prefill requests (%)", "shape": ""}
_METRIC_LABELS = {"tflops": "TFLOPS", "gbps": "GB/s (q, k, v read + o written)"}


def _tty() -> bool:
    return sys.stderr.isatty()


def clear_status() -> None:
    """Erase the progress line (on a terminal) before other output."""
    if _tty():
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


def note(message: str) -> None:
    """A line on stderr that does not mix with the progress line."""
    clear_status()
    print(message, file=sys.stderr, flush=True)


class Progress:
    """A progress bar over the sweep on stderr: redrawn in place on a terminal, a line per step otherwise."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def step(self, text: str) -> None:
        self.done += 1
        filled = 30 * self.done // self.total
        line = f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {text}"
        sys.stderr.write(f"\r{line}\033[K" if _tty() else line + "\n")
        sys.stderr.flush()


def _row_name(row: dict) -> str:
    return row["backend"] + (f"[{row['algo']}]" if row["algo"] else "")


def peer_ratios(rows: list[dict]) -> list[Optional[float]]:
    """For each row, the best peer's ms of the same case / the row's ms: a speedup (> 1: faster than every peer);
    None where the row or every peer is n/a. Yardstick rows (``kv_read``) are no peer."""
    best: dict = {}
    for row in rows:
        if row["backend"] != OURS and row["backend"] not in YARDSTICKS and row["ms"] is not None:
            key = tuple(row[field] for field in CASE_FIELDS)
            best[key] = min(best.get(key, math.inf), row["ms"])
    ratios = []
    for row in rows:
        peer_ms = best.get(tuple(row[field] for field in CASE_FIELDS))
        ratios.append(peer_ms / row["ms"] if peer_ms is not None and row["ms"] is not None else None)
    return ratios


def _cell(value: Optional[float], width: int, fmt: str = ".4g") -> str:
    return format("n/a" if value is None else format(value, fmt), f">{width}")


def format_table(scenario: Scenario, rows: list[dict]) -> str:
    """The scenario's rows, the case shown once above its backends; last column: ``peer_ratios``."""
    label_width = max(len(case.label()) for case in scenario.cases)
    header = (f"{'case':<{label_width}}  {'backend':<24} {'ms':>10} {'TFLOPS':>9} {'GB/s':>9}  {'vs best peer':>12}")
    lines = [f"== {scenario.name} ==", header, "-" * len(header)]
    previous = None
    for row, ratio in zip(rows, peer_ratios(rows)):
        label = case_of(row).label()
        shown = label if label != previous else ""
        previous = label
        lines.append(f"{shown:<{label_width}}  {_row_name(row):<24} {_cell(row['ms'], 10)} "
                     f"{_cell(row['tflops'], 9)} {_cell(row['gbps'], 9)}  {_cell(ratio, 12, '.2f')}")
    return "\n".join(lines)


def write_json(path: Path, device: dict, copy_gbps: float, rows: list[dict]) -> None:
    """The run's results (fields: ``schema``); rewritten whole after each scenario, via a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"device": device, "copy_gbps": copy_gbps, "rows": rows}, indent=1) + "\n")
    tmp.replace(path)


def _x(row: dict, scenario: Scenario, labels: list[str]) -> float:
    if scenario.x == "shape":
        return labels.index(case_of(row).label())
    if scenario.x == "prefill_fraction":
        return 100 * row["prefill_fraction"]
    return row[scenario.x]


def plot(path: Path, scenario: Scenario, rows: list[dict], title: str, copy_gbps: float) -> None:
    """A line chart of the scenario: x the swept field (log2 for lengths and batch sizes, a tick per case
    for "shape"), y its metric, one line per backend (and per value of ``scenario.series``, dashed
    for the second); the copy bandwidth as a dashed ceiling on GB/s charts. n/a points are left out."""
    from matplotlib.figure import Figure

    labels = [case.label() for case in scenario.cases]
    lines: dict = {}  # (backend name, series value) -> [(x, y)]
    for row in rows:
        if row[scenario.metric] is not None:
            key = (_row_name(row), row[scenario.series] if scenario.series else None)
            lines.setdefault(key, []).append((_x(row, scenario, labels), row[scenario.metric]))
    names = list(dict.fromkeys(name for name, _ in lines))
    values = list(dict.fromkeys(value for _, value in lines))

    fig = Figure(figsize=(10, 6))
    ax = fig.add_subplot()
    for (name, value), points in lines.items():
        xs, ys = zip(*sorted(points))
        label = name if scenario.series is None else f"{name} {scenario.series}={value}"
        ax.plot(xs, ys, marker="o", color=f"C{names.index(name) % 10}",
                linestyle=("-", "--", ":", "-.")[values.index(value) % 4], label=label)
    if scenario.metric == "gbps":
        ax.axhline(copy_gbps, color="gray", linestyle="--", label=f"device copy {copy_gbps:.0f} GB/s")
    if scenario.x == "shape":
        ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=8)
    elif scenario.x != "prefill_fraction":
        ticks = sorted({getattr(case, scenario.x) for case in scenario.cases})
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel(_AXIS_LABELS[scenario.x])
    ax.set_ylabel(_METRIC_LABELS[scenario.metric])
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
