"""What every benchmark shares: the machine line, interleaved timing, the ratio line.

Benchmarks run on shared machines: each candidate is timed in interleaved rounds (A, B, A, B, ...)
so that load from other processes hits both alike, and the ratio is taken between the best
(minimum) times, the usual estimate of a code path's own cost under noise (Python's timeit).
Medians are printed next to them.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(device: torch.device) -> str:
    """One line naming the hardware and software a figure came from."""
    parts = [f"CPU {cpu_model()} ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})",
             f"torch {torch.__version__}", f"python {platform.python_version()}", f"device {device}"]
    if device.type == "cuda":
        parts.append(f"GPU {torch.cuda.get_device_name(device)}")
    try:
        parts.append(f"load average {os.getloadavg()[0]:.1f}")
    except OSError:
        pass
    return "machine: " + ", ".join(parts)


def add_common_args(parser: argparse.ArgumentParser, repeats: int) -> None:
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run (default cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--repeats", type=int, default=repeats, help=f"timed rounds per candidate (default {repeats})")


def setup(args: argparse.Namespace) -> torch.device:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU is visible to this process")
    print(machine_line(device), flush=True)
    return device


def time_interleaved(candidates: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                     warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each candidate, measured in interleaved rounds after ``warmup`` calls each."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def describe(name: str, seconds: list[float]) -> str:
    return f"  {name:<44s} best {1e3 * min(seconds):9.2f} ms   median {1e3 * statistics.median(seconds):9.2f} ms"


def report(times: dict[str, list[float]]) -> None:
    for name, seconds in times.items():
        print(describe(name, seconds), flush=True)


def speedup(times: dict[str, list[float]], reference: str, candidate: str) -> float:
    """How many times faster ``candidate`` is than ``reference`` (best times)."""
    return min(times[reference]) / min(times[candidate])


def goal_line(label: str, value: float, goal: str | None, met: bool = True, fmt: str = ".2f") -> str:
    """``RESULT label: value (goal ...: met | NOT met)``, the line the README's figures are taken from."""
    verdict = f"  (goal {goal}: {'met' if met else 'NOT met'})" if goal else ""
    return f"RESULT {label}: {value:{fmt}}{verdict}"
