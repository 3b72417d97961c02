"""The report: the JSON written after every measurement, the log lines, the table at the end (no torch here)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SCHEMA = "sritm-gpu-check/1"
REPORT_KEYS = (
    "schema", "ok", "mode", "command", "environment", "frames", "weights", "flops", "peak_tflops",
    "timings", "best", "parity", "postprocess", "onnxruntime", "skipped", "errors", "wall_s",
)
"""The report's top-level keys, in order."""
COMMAND = "python -m build.gpu_check"


class Budget:
    """The run's time budget: seconds since it started and seconds left.

    Args:
        seconds: the whole run's budget.
    """

    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.seconds = seconds

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.start

    def left(self) -> float:
        """Seconds left of the budget (negative once it is spent)."""
        return self.seconds - self.elapsed()


class Report:
    """Everything measured, as the JSON report's ``data``, with the log, the skips and the errors.

    Args:
        args: the parsed command line (``--json``, ``--quick``).
        budget: the run's time budget; the log lines are stamped with its elapsed time.
    """

    def __init__(self, args: argparse.Namespace, budget: Budget) -> None:
        self.args = args
        self.budget = budget
        self.data: dict[str, Any] = {
            "schema": SCHEMA,
            "ok": True,
            "mode": "quick" if args.quick else "full",
            "command": " ".join([COMMAND, *sys.argv[1:]]),
            "environment": {},
            "frames": {},
            "weights": {},
            "flops": {},
            "peak_tflops": None,
            "timings": [],
            "best": {},
            "parity": {},
            "postprocess": {},
            "onnxruntime": {},
            "skipped": [],
            "errors": [],
            "wall_s": None,
        }

    def save(self) -> None:
        """Write the report so far (after every measurement: a run cut short still leaves its figures)."""
        self.data["wall_s"] = self.budget.elapsed()
        if self.args.json:
            self.args.json.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.args.json.with_name(self.args.json.name + ".tmp")
            temporary.write_text(json.dumps(json_safe(self.data), indent=2) + "\n")
            temporary.replace(self.args.json)

    def log(self, message: str) -> None:
        """Print ``message`` to stdout, stamped with the seconds since the start."""
        print(f"[{self.budget.elapsed():6.1f} s] {message}", flush=True)

    def skip(self, what: str, why: str) -> None:
        """Record and log that ``what`` was not run, and why."""
        self.data["skipped"].append({"what": what, "why": why})
        self.log(f"skipped {what}: {why}")

    def error(self, what: str, error: BaseException) -> None:
        """Record and log that ``what`` failed (with the traceback in the report); the run is then not ok."""
        line = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        self.data["errors"].append({"what": what, "error": line, "traceback": traceback.format_exc(limit=6)})
        self.data["ok"] = False
        self.log(f"ERROR in {what}: {line}")

    @contextmanager
    def stage(self, what: str) -> Iterator[None]:
        """Run the block as the stage ``what``: an exception is recorded as its error, and the report is saved."""
        try:
            yield
        except Exception as error:  # one failing stage must not stop the others
            self.error(what, error)
        finally:
            self.save()

    def enough_time(self, what: str, seconds: float) -> bool:
        """Whether ``seconds`` are left for ``what``; if not, it is recorded as skipped."""
        if self.budget.left() < seconds:
            self.skip(what, f"time budget: {self.budget.left():.0f} s left, needs ~{seconds:.0f} s")
            return False
        return True


def json_safe(value: Any) -> Any:
    """``value`` with string keys and without infinities or NaNs (as ``null``), for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _psnr_text(parity: dict[str, Any]) -> str:
    """A variant's parity cell in the table: empty, ``exact``, ``inf`` or the minimum PSNR."""
    if not parity:
        return ""
    if parity.get("identical"):
        return "exact"
    psnr = parity.get("min_psnr_db")
    return "inf" if psnr is None or not math.isfinite(psnr) else f"{psnr:.1f}"


def print_table(report: Report) -> None:
    """Print the timings (with each variant's parity), the best per scale, post-processing, skips and errors."""
    parity = report.data["parity"]
    header = (f"{'scale':>5} {'LR size':>10} {'batch':>5}  {'variant':<28} {'ms/frame':>9} {'fps':>8} "
              f"{'TFLOP/s':>8} {'x floor':>8} {'compile s':>9} {'PSNR dB':>8}")
    print("\n" + header)
    print("-" * len(header))
    for row in report.data["timings"]:
        psnr_text = _psnr_text(parity.get(f"x{row['scale']}", {}).get(row["variant"], {}))
        ratio = row.get("ratio_to_floor")
        compile_s = row.get("compile_s")
        print(
            f"{'x' + str(row['scale']):>5} {row['size'][0]:>4}x{row['size'][1]:<5} {row['batch']:>5}  "
            f"{row['variant']:<28} {row['ms_per_frame']:>9.3f} {row['fps']:>8.1f} {row['achieved_tflops']:>8.1f} "
            f"{'' if ratio is None else f'{ratio:.1f}':>8} {'' if compile_s is None else f'{compile_s:.1f}':>9} "
            f"{psnr_text:>8}"
        )
    for scale, best in report.data["best"].items():
        floor = f", {best['ratio_to_floor']:.1f}x the FLOP floor" if best.get("ratio_to_floor") else ""
        print(f"best {scale}: {best['variant']} batch {best['batch']}: {best['ms_per_frame']:.3f} ms/frame, "
              f"{best['fps']:.1f} fps" + floor)
    for key, post in report.data["postprocess"].items():
        if "torch" in post:
            print(f"post-processing {key}: torch on {post['device']} {post['torch']['post_float64_ms']:.2f} ms "
                  f"(float64) / {post['torch']['post_float32_ms']:.2f} ms (float32) vs numpy "
                  f"{post['cpu_numpy']['post_ms']:.1f} ms; max code difference "
                  f"{post['equality']['post_float64_vs_numpy']['max_code_difference']}")
    ort_info = report.data["onnxruntime"]
    print(f"onnxruntime: {'not installed' if not ort_info.get('installed') else ort_info.get('version')}, "
          f"CUDA provider {'present' if ort_info.get('cuda_provider') else 'absent'}")
    for skipped in report.data["skipped"]:
        print(f"skipped: {skipped['what']}: {skipped['why']}")
    for error in report.data["errors"]:
        print(f"ERROR: {error['what']}: {error['error']}")
