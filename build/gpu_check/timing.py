"""Stage 2: timing. Each variant at batch 1 (with its parity), CUDA graphs, a batch sweep, torch.compile; the best."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from build.gpu_check.config import FULL_BATCHES, QUICK_BATCHES
from build.gpu_check.parity import check_parity, start_parity
from build.gpu_check.runners import Runner, build_runner, precision_flags, synchronize
from build.gpu_check.variants import (
    COMPILE_VARIANTS,
    EAGER_VARIANTS,
    GRAPH_VARIANTS,
    QUICK_EAGER_VARIANTS,
    SWEEP_VARIANTS,
    Variant,
)

if TYPE_CHECKING:
    from build.gpu_check.session import Session


def time_callable(device: torch.device, fn: Callable[[], Any], warmup: int, runs: int,
                  target_s: float) -> dict[str, Any]:
    """Median time of ``fn`` (ms): CUDA events per run on a GPU, ``perf_counter`` on the CPU.

    After the warm-up, one timed call sizes the run count to about ``target_s``
    seconds (between 5 and ``runs``).
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    started = time.perf_counter()
    fn()
    synchronize(device)
    once = time.perf_counter() - started
    count = max(min(runs, int(target_s / max(once, 1e-6))), min(5, runs))
    times: list[float] = []
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(count)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        times = [start.elapsed_time(end) for start, end in events]
    else:
        for _ in range(count):
            started = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - started))
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p10_ms": times[len(times) // 10],
        "p90_ms": times[min(len(times) - 1, (9 * len(times)) // 10)],
        "runs": count,
    }


def timing_row(session: Session, runner: Runner, scale: int, batch: int, x: torch.Tensor) -> dict[str, Any]:
    """Time ``runner`` on ``x`` (a batch of ``batch``): the report's row, per frame and against the FLOP floor."""
    flops_per_frame, peak, args = session.flops[scale], session.peak, session.args
    prepared = runner.prepare(x)
    with torch.no_grad(), precision_flags(runner.variant):
        stats = time_callable(session.device, lambda: runner.run(prepared), args.warmup, args.runs, args.target_s)
    ms_frame = stats["median_ms"] / batch
    floor_ms = 1000 * flops_per_frame / (peak * 1e12) if peak else None
    return {
        "scale": scale,
        "size": list(session.sizes[scale]),
        "batch": batch,
        "variant": runner.variant.name,
        **stats,
        "ms_per_frame": ms_frame,
        "fps": 1000 / ms_frame,
        "achieved_tflops": flops_per_frame / (ms_frame / 1000) / 1e12,
        "floor_ms": floor_ms,
        "ratio_to_floor": ms_frame / floor_ms if floor_ms else None,
        "compile_s": runner.compile_s,
    }


def time_variant(session: Session, scale: int, variant: Variant, batch: int = 1) -> dict[str, Any] | None:
    """Time ``variant`` at ``scale`` and ``batch``, and check its parity at batch 1; None when it did not run."""
    report = session.report
    why = variant.unsupported_on(session.device)
    if why:
        if batch == 1:
            report.skip(f"x{scale} {variant.name}", why)
        return None
    key = (scale, variant.name) if batch == 1 else (scale, f"{variant.name}@{batch}")
    x = session.examples[scale] if batch == 1 else session.examples[scale].repeat(batch, 1, 1, 1)
    try:
        runner = session.runners.get(key) or build_runner(session.networks[scale], variant, x,
                                                           session.args.compile_backend)
        if batch == 1:
            session.runners[key] = runner
        row = timing_row(session, runner, scale, batch, x)
    except Exception as error:  # one variant failing (out of memory, no kernel) must not stop the others
        session.free_cached_memory()
        report.error(f"x{scale} {variant.name} batch {batch}", error)
        return None
    session.data["timings"].append(row)
    report.save()
    report.log(f"x{scale} {variant.name:<26} batch {batch}: {row['ms_per_frame']:8.3f} ms/frame "
               f"{row['fps']:8.1f} fps" + (f"  {row['ratio_to_floor']:.1f}x floor" if row["ratio_to_floor"] else "")
               + (f"  (compile {row['compile_s']:.1f} s)" if row["compile_s"] else ""))
    if batch == 1:
        check_parity(session, scale, runner)
    return row


def time_eager_variants(session: Session) -> None:
    """Per scale: the parity reference, then every eager and autocast variant at batch 1 (fewer with --quick)."""
    for scale in session.scales:
        start_parity(session, scale)
        for variant in QUICK_EAGER_VARIANTS if session.quick else EAGER_VARIANTS:
            if session.report.enough_time(f"x{scale} {variant.name}", 5):
                time_variant(session, scale, variant)


def time_cuda_graphs(session: Session) -> None:
    """The CUDA-graph variants at batch 1 (recorded as skipped off CUDA)."""
    for scale in session.scales:
        for variant in GRAPH_VARIANTS:
            if session.report.enough_time(f"x{scale} {variant.name}", 10):
                time_variant(session, scale, variant)


def sweep_batches(session: Session) -> None:
    """The fast variants at batches above 1 (with --quick: one variant, one batch, the first scale)."""
    for scale in session.scales[:1] if session.quick else session.scales:
        for variant in SWEEP_VARIANTS[:1] if session.quick else SWEEP_VARIANTS:
            for batch in (QUICK_BATCHES if session.quick else FULL_BATCHES)[scale]:
                if session.report.enough_time(f"x{scale} {variant.name} batch {batch}", 15):
                    time_variant(session, scale, variant, batch)
        session.free_cached_memory()


def time_compiled(session: Session) -> None:
    """The ``torch.compile`` variants, the slowest to prepare (with --quick: one, on the first scale)."""
    report = session.report
    if session.args.no_compile:
        report.skip("torch.compile", "--no-compile")
        return
    for variant in COMPILE_VARIANTS:
        for scale in session.scales[:1] if session.quick else session.scales:
            why = variant.unsupported_on(session.device)
            if why:
                report.skip(f"x{scale} {variant.name}", why)
            elif report.enough_time(f"x{scale} {variant.name}", 5 if session.quick else 100):
                time_variant(session, scale, variant)
        if session.quick:
            break  # one compiled variant exercises the path


def record_best(session: Session) -> None:
    """The report's ``best``: the fastest row per scale, over all batches and at batch 1."""
    best = session.data["best"]
    for scale in session.scales:
        rows = [r for r in session.data["timings"] if r["scale"] == scale]
        if rows:
            best[f"x{scale}"] = min(rows, key=lambda r: r["ms_per_frame"])
            batch1 = [r for r in rows if r["batch"] == 1]
            if batch1:
                best[f"x{scale}_batch1"] = min(batch1, key=lambda r: r["ms_per_frame"])
