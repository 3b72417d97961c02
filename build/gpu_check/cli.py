"""The command line: arguments, the exit codes, the one-line refusal without PyTorch or CUDA.

Nothing here imports torch at module level: ``--help`` and the refusals work without it, and the
modules that need it (the checks) are imported only once torch, and CUDA where asked for, are there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from build import gpu_check
from build.gpu_check.config import DEFAULT_SAMPLE
from build.gpu_check.report import COMMAND, Budget, Report, print_table

EXIT_NO_CUDA = 2


def fail(message: str) -> int:
    """Print ``gpu_check: message`` on stderr; returns the exit status for a machine without CUDA."""
    print(f"gpu_check: {message}", file=sys.stderr)
    return EXIT_NO_CUDA


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line, with the ``--quick`` / ``--dry-run`` defaults filled in."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=gpu_check.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and few runs (the code paths, not the figures)")
    parser.add_argument("--dry-run", action="store_true",
                        help="--device cpu --quick: exercise the script without a GPU")
    parser.add_argument("--scenes", type=Path,
                        help="HDR scene folder for the parity frames (e.g. ../shared/data/hdr-scenes)")
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE,
                        help="clip for the parity frames without --scenes")
    parser.add_argument("--scale", type=int, choices=(2, 4), action="append", help="default: 4 and 2")
    parser.add_argument("--size", help="HEIGHTxWIDTH of the low-resolution input for every scale "
                                       "(default: 540x960 at x4, 1080x1920 at x2; quick: 16x16)")
    parser.add_argument("--parity-frames", type=int, default=3)
    parser.add_argument("--warmup", type=int, help="warm-up calls per measurement (default 10; quick 0)")
    parser.add_argument("--runs", type=int, help="at most this many timed calls (default 200; quick 3)")
    parser.add_argument("--target-s", type=float, help="seconds of timed calls per measurement (default 1.0)")
    parser.add_argument("--time-budget", type=float, default=420.0, help="seconds; optional stages past it are skipped")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 TFLOP/s of the GPU (default: 790 on H200/H100)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--compile-backend", help="torch.compile backend (default inductor; quick on CPU: eager)")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device, args.quick = "cpu", True
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 10)
    args.runs = args.runs if args.runs is not None else (3 if args.quick else 200)
    args.target_s = args.target_s if args.target_s is not None else (0.05 if args.quick else 1.0)
    if args.compile_backend is None:
        args.compile_backend = "eager" if (args.quick and args.device == "cpu") else "inductor"
    if args.quick:
        args.parity_frames = min(args.parity_frames, 1)
    if args.size:
        try:
            height, width = (int(part) for part in args.size.lower().split("x"))
        except ValueError:
            parser.error(f"--size is HEIGHTxWIDTH, like 540x960, not {args.size!r}")
        if height < 2 or width < 2 or height % 2 or width % 2:
            parser.error(f"--size must be even and at least 2x2, not {args.size}")
        args.size = (height, width)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the checks; 0 when all ran and held, 1 when one failed, 2 without PyTorch or CUDA."""
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        return fail("PyTorch is not installed; this check needs PyTorch with CUDA")
    if args.device == "cuda" and not torch.cuda.is_available():
        built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
        return fail(
            f"CUDA is not available (torch {torch.__version__}, built with {built}); run this on the GPU machine, "
            "or pass --dry-run to exercise it on the CPU"
        )
    budget = Budget(args.time_budget)
    report = Report(args, budget)
    try:
        from build.gpu_check.checks import run_checks  # torch, numpy and the project's network: only now

        run_checks(args, report)
    except Exception as error:  # still print and write what was measured
        report.error("run", error)
    finally:
        report.save()
        print_table(report)
        if args.json:
            print(f"report: {args.json}")
    return 0 if report.data["ok"] else 1
