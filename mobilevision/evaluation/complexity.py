"""Model complexity: parameter count, multiply-accumulates, measured latency, and rank correlation.

MAdds are counted by :class:`torch.utils.flop_counter.FlopCounterMode`, which records the FLOPs of
every convolution and matrix multiplication the forward pass dispatches (``2 * MACs``, from the actual
weight shapes, so grouped and depthwise convs count ``C_out * C_in/groups * k * k`` per output pixel).
The forward pass runs on the ``meta`` device, so counting costs no arithmetic even for big models.
Element-wise work (BN, activations, the residual adds, the squeeze-excite gate) and conv biases are
not counted, which is the convention of the MobileNet / EfficientNet / MobileOne papers.
"""

from __future__ import annotations

import functools
import itertools
import os
import platform
import re
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["busy_cpus", "busy_warning", "count_madds", "count_params", "cpu_flags", "cpu_name", "device_description",
           "device_slug", "latency_stats", "measure_latency", "measure_latency_interleaved", "spearman",
           "time_interleaved"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def count_madds(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> int:
    """Multiply-accumulates of one forward pass on an input of ``input_size`` (eval mode).

    ``FlopCounterMode`` reports 2 FLOPs per multiply-accumulate for conv/mm/bmm/addmm, so the
    result is its total divided by two. The pass runs on the ``meta`` device (shapes only, no
    arithmetic: parameters and buffers are swapped for meta tensors with
    :func:`torch.func.functional_call`, the model itself is untouched), falling back to a real pass on
    zeros for models whose forward needs actual values. Train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        try:
            return _count_flops_meta(model, input_size) // 2
        except Exception:  # data-dependent forward: count on a real pass
            device, dtype = _model_device_dtype(model)
            x = torch.zeros(tuple(input_size), device=device, dtype=dtype)
            with torch.inference_mode(), FlopCounterMode(display=False) as counter:
                model(x)
            return int(counter.get_total_flops()) // 2
    finally:
        model.train(was_training)


def _count_flops_meta(model: nn.Module, input_size: Sequence[int]) -> int:
    _, dtype = _model_device_dtype(model)
    state = {name: torch.empty_like(t, device="meta")
             for name, t in itertools.chain(model.named_parameters(remove_duplicate=False),
                                            model.named_buffers(remove_duplicate=False))}
    x = torch.empty(tuple(input_size), device="meta", dtype=dtype)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        functional_call(model, state, (x,), tie_weights=False)
    return int(counter.get_total_flops())


# -- latency ---------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency_stats(times_s: Sequence[float]) -> dict:
    """The project's one summary of timed runs (seconds in): ``median_ms``, ``p90_ms`` (linear interpolation between
    the two nearest ranks, numpy's default), ``mean_ms``, ``min_ms`` and ``repeats``; every command reports these."""
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "repeats": int(ms.size),
    }


def time_interleaved(fns: Mapping[str, Callable[[], object]], warmup: int = 5, repeats: int = 30,
                     device: str | torch.device = "cpu", time_budget_s: float | None = None,
                     min_repeats: int = 3, settle: int = 0) -> dict[str, dict]:
    """Wall time of several zero-argument callables run side by side: every round calls each once, in
    turn (the order rotates from round to round, so none always runs first).

    Alternating call by call puts every callable under the same conditions (CPU frequency, cache
    state, load from other processes). CUDA (when ``device`` is a CUDA device) is synchronized around
    every timed call. With ``time_budget_s`` the timed rounds stop once that many seconds have passed
    (but never before ``min_repeats`` rounds), so slow callables get fewer repeats; the warm-up rounds
    then also stop early (after at least one) once a fifth of that budget has passed. Grad mode is
    the caller's: wrap the call in :func:`torch.inference_mode` for inference.

    ``settle``: untimed calls of the same callable right before each timed one. With many large models
    side by side, each call otherwise starts with the CPU caches full of the others' weights
    (``settle=1`` times what a model run in a loop takes; ``0``, the default, times a cold start).

    Returns ``{name: {"median_ms", "p90_ms", "mean_ms", "min_ms", "repeats"}}``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = torch.device(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for _ in range(max(0, warmup)):
        for fn in fns.values():
            fn()
        _sync(device)
        if time_budget_s is not None and time.perf_counter() - start >= time_budget_s / 5:
            break
    names = list(fns)
    start = time.perf_counter()
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
            for _ in range(max(0, settle)):
                fns[name]()
            _sync(device)
            t0 = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
        if (time_budget_s is not None and r + 1 >= min(min_repeats, repeats)
                and time.perf_counter() - start >= time_budget_s):
            break
    return {name: latency_stats(t) for name, t in times.items()}


def measure_latency_interleaved(models: Mapping[str, nn.Module], input: torch.Tensor, warmup: int = 5,
                                repeats: int = 30, device: str | torch.device | None = None,
                                time_budget_s: float | None = None, min_repeats: int = 3) -> dict[str, dict]:
    """Latency of several models measured side by side (:func:`time_interleaved` of ``model(input)``).

    Each model is moved to ``device`` (default: where ``input`` is) and put in eval mode; runs are
    under :func:`torch.inference_mode`, and CUDA is synchronized around every timed run.

    Returns ``{name: {"median_ms", "p90_ms", "mean_ms", "min_ms", "repeats"}}``.
    """
    device = torch.device(device) if device is not None else input.device
    x = input.to(device)
    runs = {name: functools.partial(m.to(device).eval(), x) for name, m in models.items()}
    with torch.inference_mode():
        return time_interleaved(runs, warmup, repeats, device, time_budget_s, min_repeats)


def measure_latency(model: nn.Module, input: torch.Tensor, warmup: int = 5, repeats: int = 30,
                    device: str | torch.device | None = None, time_budget_s: float | None = None) -> dict:
    """Latency of ``model(input)`` in milliseconds: ``{"median_ms", "p90_ms", "mean_ms", "min_ms", "repeats"}``.

    ``warmup`` untimed runs, then ``repeats`` timed ones (fewer if ``time_budget_s`` runs out, at
    least 3), under :func:`torch.inference_mode`, synchronizing CUDA around each run.
    """
    return measure_latency_interleaved({"model": model}, input, warmup, repeats, device, time_budget_s)["model"]


# -- rank correlation ------------------------------------------------------------------------------

def _rank(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given the average of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson correlation of the ranks (ties averaged).

    NaN when fewer than two points or when either side is constant.
    """
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    if x.size < 2:
        return float("nan")
    rx, ry = _rank(x), _rank(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def _cpuinfo(key: str) -> str | None:
    """The first ``key: value`` of ``/proc/cpuinfo`` (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for stating where a latency was measured."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "cpu"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where there is none)."""
    return set((_cpuinfo("flags") or "").split())


def device_description() -> str:
    return f"{cpu_name()} ({os.cpu_count()} logical CPUs, {platform.system()} {platform.machine()})"


def device_slug() -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", f"{cpu_name()}-{os.cpu_count()}cpu").strip("-")


def busy_cpus(seconds: float = 0.5) -> float | None:
    """How many CPUs other processes keep busy right now: the non-idle share of ``/proc/stat`` over ``seconds``
    (this process sleeps meanwhile) times the number of CPUs; None where ``/proc/stat`` does not exist."""
    def snapshot() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]  # user .. steal (guest time is inside user)
        return sum(values), values[3] + values[4]  # all, idle + iowait

    try:
        total0, idle0 = snapshot()
        time.sleep(seconds)
        total1, idle1 = snapshot()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return None if total <= 0 else (1.0 - (idle1 - idle0) / total) * (os.cpu_count() or 1)


def busy_warning(busy: Sequence[float | None], threads: int) -> str | None:
    """A warning when other processes left fewer than ``threads`` CPUs free before or after measuring:
    multi-threaded inference then waits for descheduled threads and can be many times slower."""
    cpus = os.cpu_count() or 1
    known = [b for b in busy if b is not None]
    if not known or max(known) + threads <= cpus + 0.25:
        return None
    return (f"warning: other processes kept {max(known):.1f} of {cpus} CPUs busy around the measurement ({threads} "
            f"threads asked): latencies are inflated; measure again when the machine is idle (--remeasure).")
