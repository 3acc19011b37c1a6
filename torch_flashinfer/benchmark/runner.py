"""One case through every backend that applies to it: a JSON row each, n/a when a backend refuses."""

from __future__ import annotations

import warnings
from typing import Optional

import torch

from . import report, timing
from .backends import Backend, make_inputs
from .schema import Case, make_row

_reported: set = set()  # refusals already explained on stderr, so each reason is printed once


def _first_line(text: object, limit: int = 160) -> str:
    line = (str(text).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[:limit] + "..."


def _report_refusal(backend: Backend, case: Case, err: Exception, caught: list) -> None:
    """One stderr line per distinct reason: the error's first line, and the first warning (SDPA explains there)."""
    reason = _first_line(err)
    if caught:
        reason += f" [{_first_line(caught[0].message)}]"
    key = (backend.name, backend.algo, reason)
    if key not in _reported:
        _reported.add(key)
        name = backend.name + (f"[{backend.algo}]" if backend.algo else "")
        report.note(f"n/a: {name} on {case.label()}: {type(err).__name__}: {reason}")


def run_case(case: Case, backends: list[Backend], device: torch.device, iters: int, rounds: int = 1) -> list[dict]:
    """Time each backend that applies to ``case``; a backend that raises gets a row with ``ms`` null.

    With ``rounds`` > 1 the backends are timed again in ``timing.round_order`` and each keeps its
    lowest median.
    Inputs that cannot be made (e.g. out of memory) make every row of the case n/a.
    """
    chosen = [backend for backend in backends if backend.applies(case)]
    if device.type == "cuda":
        torch.cuda.empty_cache()  # give back the previous case's blocks: this one may need all the memory
    try:
        inputs = make_inputs(case, device)
    except Exception as err:  # noqa: BLE001 -- recorded as n/a, never a crash
        for backend in chosen:
            _report_refusal(backend, case, err, [])
        return [make_row(case, backend.name, backend.algo, None) for backend in chosen]
    best: list[Optional[float]] = [None] * len(chosen)
    refused: set[int] = set()
    for i in timing.round_order(len(chosen), rounds):
        if i in refused:
            continue
        backend = chosen[i]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                call = backend.make(case, inputs)  # backends.Parts: each part timed alone, medians added
                ms = sum(timing.median_ms(part, device, iters) for part in getattr(call, "parts", (call,)))
            except Exception as err:  # noqa: BLE001 -- recorded as n/a, never a crash
                _report_refusal(backend, case, err, caught)
                refused.add(i)
                continue
        best[i] = ms if best[i] is None else min(best[i], ms)
    return [make_row(case, backend.name, backend.algo, ms) for backend, ms in zip(chosen, best)]
