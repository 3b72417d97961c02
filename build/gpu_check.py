#!/usr/bin/env python
"""GPGMNet on one CUDA GPU: speed against the FLOP floor, parity of the fast variants, the GPU post-processing.

One prepared script, end to end in under 8 minutes on an H200 (``--time-budget``
guards it: the optional stages left when the budget runs out are skipped and
listed in the report). It needs PyTorch with CUDA, numpy and OpenCV; onnxruntime
is optional. The repository root is put on ``sys.path`` by the script itself.

Stages (each reported, each failing on its own without stopping the others):

1. **FLOPs** of the network (without the bicubic skip, as served) at each size,
   counted with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device,
   and the floor: FLOPs / the GPU's dense bf16 rate (``--peak-tflops``; on an
   H200 the 790 TFLOP/s measured here for an 8192³ bf16 matrix product).
2. **Timing** of ×4 at 540×960 and ×2 at 1080×1920: fp32 (strict, TF32 off),
   tf32, fp16, bf16 (weights and activations cast), NCHW and channels_last,
   autocast; CUDA graphs; ``torch.compile`` (inductor, default mode and
   ``reduce-overhead``); batch 1 and a batch sweep. Device events per run,
   warm-up, the median of many runs.
3. **Parity**: each variant's output through the *same* post-processing
   (``gpgmnet.serving_torch.postprocess``, 10-bit I420) against the fp32
   reference; PSNR over all 10-bit samples. fp16/bf16 must stay above 50 dB.
   Frames: ``--scenes DIR`` (HDR masters through the training data pipeline),
   else the sample clip (up-sized and cropped), else synthetic structured frames.
4. **Post-processing** on the GPU (bicubic skip, legal-range clamp, 10-bit
   rounding, 4:2:0, I420) against the numpy path of the CPU server
   (``gpgmnet.serving``): time and equality; pre-processing likewise.
5. **ONNX Runtime**: whether its CUDA provider is present; if so, the exported
   graph is timed and checked on it.

``--json OUT`` writes everything, and rewrites it after every measurement, so a
run cut short still leaves its figures; the table goes to stdout. Exit status:
0 when every stage ran and every check held, 1 when a stage failed or a check
did not hold (fp16/bf16 under 50 dB, the torch post-processing more than one
code from numpy), 2 without CUDA, with one line on stderr. ``--dry-run``
(= ``--device cpu --quick``) runs the same code paths on the CPU at tiny sizes,
for the tests; its figures mean nothing.

On the H200 (about 6 to 8 minutes)::

    PYTHONUNBUFFERED=1 python3 build/gpu_check.py --json $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log

Weights: ``weights/gpgmnet_x{s}.pt`` when present, else the seeded untrained
network; parity figures depend on the weights (the report names them).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # before cv2 is imported: --scenes reads EXR

import argparse
import copy
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "build"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

EXIT_NO_CUDA = 2
SCHEMA = "sritm-gpu-check/1"
FULL_SIZES = {4: (540, 960), 2: (1080, 1920)}
"""Low-resolution input sizes timed: both give a 2160×3840 frame."""
QUICK_SIZES = {4: (16, 16), 2: (16, 16)}
MEASURED_BF16_TFLOPS = {"H200": 790.0, "H100": 790.0}
"""Dense bf16 rate by device name: an 8192³ bf16 matrix product measured on this workplace's H200 (spec: 989)."""
PARITY_FLOOR_DB = 50.0
DEFAULT_SAMPLE = ROOT / "client" / "samples" / "sdr_sample.mp4"
FULL_BATCHES = {4: (2, 4, 8), 2: (2, 4)}
QUICK_BATCHES = {4: (2,), 2: (2,)}
REPORT_KEYS = (
    "schema", "ok", "mode", "command", "environment", "frames", "weights", "flops", "peak_tflops",
    "timings", "best", "parity", "postprocess", "onnxruntime", "skipped", "errors", "wall_s",
)


def fail(message: str) -> int:
    print(f"gpu_check: {message}", file=sys.stderr)
    return EXIT_NO_CUDA


# --------------------------------------------------------------------------
# variants


@dataclass(frozen=True)
class Variant:
    """One way of running the network: precision, memory format, execution mode."""

    precision: str  # fp32 (strict) | tf32 | fp16 | bf16
    channels_last: bool = False
    mode: str = "eager"  # eager | autocast | cudagraph | compile | compile-cudagraphs

    @property
    def name(self) -> str:
        parts = [self.precision] + (["cl"] if self.channels_last else []) + ([self.mode] if self.mode != "eager" else [])
        return "-".join(parts)

    @property
    def half(self) -> bool:
        return self.precision in ("fp16", "bf16")

    def weight_dtype(self, torch: Any) -> Any:
        if self.mode == "autocast" or not self.half:
            return torch.float32
        return torch.float16 if self.precision == "fp16" else torch.bfloat16

    def compute_dtype(self, torch: Any) -> Any:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)

    def memory_format(self, torch: Any) -> Any:
        return torch.channels_last if self.channels_last else torch.contiguous_format


REFERENCE = Variant("fp32")
EAGER_VARIANTS = (
    Variant("fp32"), Variant("fp32", True), Variant("tf32"), Variant("tf32", True),
    Variant("fp16"), Variant("fp16", True), Variant("bf16"), Variant("bf16", True),
    Variant("fp16", True, "autocast"), Variant("bf16", True, "autocast"),
)
GRAPH_VARIANTS = (Variant("fp16", True, "cudagraph"), Variant("bf16", True, "cudagraph"), Variant("tf32", True, "cudagraph"))
COMPILE_VARIANTS = (
    Variant("bf16", True, "compile"), Variant("bf16", True, "compile-cudagraphs"),
    Variant("fp16", True, "compile"), Variant("fp16", True, "compile-cudagraphs"),
)
SWEEP_VARIANTS = (Variant("bf16", True), Variant("fp16", True), Variant("bf16", True, "cudagraph"),
                  Variant("fp16", True, "cudagraph"))
QUICK_EAGER_VARIANTS = (Variant("fp32"), Variant("fp32", True), Variant("bf16", True), Variant("fp16", True, "autocast"))
"""--quick: one variant per code path (cast, channels_last, autocast); half precision is slow on a CPU."""


# --------------------------------------------------------------------------
# the report


class Budget:
    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


class Report:
    def __init__(self, args: argparse.Namespace, budget: Budget) -> None:
        self.args = args
        self.budget = budget
        self.data: dict[str, Any] = {
            "schema": SCHEMA,
            "ok": True,
            "mode": "quick" if args.quick else "full",
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
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
        print(f"[{self.budget.elapsed():6.1f} s] {message}", flush=True)

    def skip(self, what: str, why: str) -> None:
        self.data["skipped"].append({"what": what, "why": why})
        self.log(f"skipped {what}: {why}")

    def error(self, what: str, error: BaseException) -> None:
        line = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        self.data["errors"].append({"what": what, "error": line, "traceback": traceback.format_exc(limit=6)})
        self.data["ok"] = False
        self.log(f"ERROR in {what}: {line}")

    @contextmanager
    def stage(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as error:  # noqa: BLE001 - one failing stage must not stop the others
            self.error(what, error)
        finally:
            self.save()

    def enough_time(self, what: str, seconds: float) -> bool:
        if self.budget.left() < seconds:
            self.skip(what, f"time budget: {self.budget.left():.0f} s left, needs ~{seconds:.0f} s")
            return False
        return True


def json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------
# environment, weights, FLOPs


def environment(torch: Any, device: Any) -> dict[str, Any]:
    import numpy as np

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": np.__version__,
        "device": str(device),
        "cpu_count": os.cpu_count(),
    }
    try:
        import cv2

        info["opencv"] = cv2.__version__
    except ImportError:
        info["opencv"] = None
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(
            gpu=properties.name,
            compute_capability=f"{properties.major}.{properties.minor}",
            multiprocessors=properties.multi_processor_count,
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            cudnn=torch.backends.cudnn.version(),
        )
        try:
            query = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10,
            )
            info["nvidia_smi"] = query.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            info["nvidia_smi"] = None
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def count_flops(network: Any, size: tuple[int, int], batch: int = 1) -> dict[str, Any]:
    """FLOPs of one forward (the residual, as served) on the meta device: total and per top-level block."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(network).to("meta")
    meta.bicubic_skip = False
    with torch.no_grad(), FlopCounterMode(display=False, depth=3) as counter:
        meta(torch.empty(batch, 3, *size, device="meta"))
    counts = {name: sum(per_op.values()) for name, per_op in counter.get_flop_counts().items()}
    blocks: dict[str, int] = {}
    for child, _ in network.named_children():
        name = f"GPGMNet.{child}"
        if name in counts:
            blocks[child] = counts[name]
        else:  # a ModuleList (the body) is never called itself: add up its members
            blocks[child] = sum(v for k, v in counts.items() if k.startswith(name + ".") and k.count(".") == 2)
    return {"total": counter.get_total_flops(), "blocks": blocks}


# --------------------------------------------------------------------------
# frames


def _rgb_to_i420(rgb: Any) -> Any:
    """R'G'B' in [0, 1] (H×W×3) → 8-bit BT.709 narrow-range I420, through gpgmnet.colour."""
    import numpy as np

    from gpgmnet import colour

    codes = colour.rgb_to_codes(np.clip(rgb, 0.0, 1.0), colour.BT709, 8)
    return colour.quantize_i420(codes, 8).astype(np.uint8)


def _fit(image: Any, size: tuple[int, int]) -> Any:
    """Centre-crop an H×W×C image to ``size``, mirroring it first where it is smaller."""
    import numpy as np

    height, width = size
    while image.shape[0] < height or image.shape[1] < width:
        pad_h = max(0, min(height - image.shape[0], image.shape[0]))
        pad_w = max(0, min(width - image.shape[1], image.shape[1]))
        image = np.pad(image, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
                       mode="symmetric")
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def synthetic_frames(size: tuple[int, int], count: int) -> list[Any]:
    """Gradients, edges, a saturated patch and noise (as ``tests/test_repository.py``'s frames)."""
    import numpy as np

    height, width = size
    frames = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
        rgb = np.stack([0.5 + 0.5 * np.sin(7 * xx + seed), yy, (xx + yy) % 0.5 * 2], axis=-1)
        rgb[height // 3 : height // 2, width // 4 : width // 2] = [0.95, 0.9, 0.1]
        rgb = rgb + rng.normal(0, 0.03, rgb.shape)
        frames.append(_rgb_to_i420(rgb))
    return frames


def sample_frames(path: Path, size: tuple[int, int], count: int) -> tuple[list[Any], str]:
    """Frames of the sample clip, up-sized (bicubic) to cover ``size`` and centre-cropped."""
    import cv2
    import numpy as np

    decoded: list[Any] = []
    try:
        import av

        with av.open(str(path)) as container:
            decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        decoder = "PyAV"
    except ImportError:
        capture = cv2.VideoCapture(str(path))
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            decoded.append(bgr[..., ::-1])
        capture.release()
        decoder = "OpenCV (BT.601 decode)"
    if not decoded:
        raise RuntimeError(f"no frames decoded from {path}")
    picks = [decoded[round(i * (len(decoded) - 1) / max(count - 1, 1))] for i in range(count)]
    frames = []
    for rgb8 in picks:
        height, width = rgb8.shape[:2]
        factor = max(size[0] / height, size[1] / width)
        up = cv2.resize(rgb8.astype(np.float32) / 255.0, (math.ceil(width * factor), math.ceil(height * factor)),
                        interpolation=cv2.INTER_CUBIC)
        frames.append(_rgb_to_i420(_fit(up, size)))
    return frames, f"{len(frames)} of {len(decoded)} frames of {path.name} ({decoder}), resized ×{factor:.2f} (bicubic), centre crop"


def scene_frames(scenes_dir: Path, scale: int, size: tuple[int, int], count: int) -> tuple[list[Any], str]:
    """LR SDR frames formed from HDR masters exactly as for training/evaluation, fitted to ``size``."""
    from gpgmnet import colour, data

    names = set(data.load_split()["val"])
    files = data.scene_files(scenes_dir)
    chosen = ([p for p in files if p.stem in names] or files)[:count]
    frames, used = [], []
    for path in chosen:
        pair = data.form_pair(data.read_scene(path), scale)
        yuv = _fit(colour.i420_to_yuv444(pair.lr_i420), size)
        frames.append(colour.quantize_i420(yuv, 8).astype("uint8"))
        used.append(f"{path.stem} (LR {pair.lr_size[0]}×{pair.lr_size[1]})")
    return frames, f"{len(frames)} scenes of {scenes_dir}: {', '.join(used)}; centre-cropped / mirror-padded"


def make_frames(args: argparse.Namespace, sizes: dict[int, tuple[int, int]], report: Report) -> dict[int, list[Any]]:
    frames: dict[int, list[Any]] = {}
    info: dict[str, Any] = {"count": args.parity_frames, "sizes": {str(s): list(v) for s, v in sizes.items()}}
    for source in ("scenes", "sample", "synthetic"):
        try:
            if source == "scenes":
                if args.scenes is None:
                    continue
                details = []
                for scale, size in sizes.items():
                    frames[scale], detail = scene_frames(args.scenes, scale, size, args.parity_frames)
                    details.append(f"x{scale}: {detail}")
                info["detail"] = "; ".join(details)
            elif source == "sample":
                if not args.sample.is_file():
                    report.skip("sample clip frames", f"{args.sample} is absent")
                    continue
                try:
                    for scale, size in sizes.items():
                        frames[scale], info["detail"] = sample_frames(args.sample, size, args.parity_frames)
                except Exception as error:  # noqa: BLE001 - no decoder here: synthetic frames instead
                    report.skip("sample clip frames", f"{type(error).__name__}: {error}")
                    frames.clear()
                    continue
            else:
                for scale, size in sizes.items():
                    frames[scale] = synthetic_frames(size, args.parity_frames)
                info["detail"] = "synthetic structured frames (gradients, edges, a saturated patch, noise)"
            info["source"] = source
            break
        except Exception as error:  # noqa: BLE001 - fall back to the next source
            report.error(f"frames from {source}", error)
            frames.clear()
    report.data["frames"] = info
    report.log(f"frames: {info.get('source')}: {info.get('detail')}")
    return frames


# --------------------------------------------------------------------------
# running and timing the network


@contextmanager
def precision_flags(torch: Any, variant: Variant) -> Iterator[None]:
    """TF32 only for the tf32 variants: "fp32" is strict fp32 (cuDNN allows TF32 by default)."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = variant.precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class Networks:
    """Copies of one scale's network per (weight dtype, memory format), made once."""

    def __init__(self, network: Any, device: Any) -> None:
        self.network = network
        self.device = device
        self.copies: dict[tuple[Any, bool], Any] = {}

    def get(self, torch: Any, variant: Variant) -> Any:
        key = (variant.weight_dtype(torch), variant.channels_last)
        if key not in self.copies:
            net = copy.deepcopy(self.network)
            net.bicubic_skip = False
            net.requires_grad_(False)
            self.copies[key] = net.to(self.device, key[0], memory_format=variant.memory_format(torch)).eval()
        return self.copies[key]


@dataclass
class Runner:
    variant: Variant
    prepare: Callable[[Any], Any]
    run: Callable[[Any], Any]  # prepared input -> residual (variant dtype); output may be reused by the next call
    compile_s: float | None = None


def build_runner(torch: Any, networks: Networks, variant: Variant, example: Any, args: argparse.Namespace) -> Runner:
    """A callable for ``variant``; ``example`` (fp32, N×3×h×w on the device) fixes the shape of graphs."""
    net = networks.get(torch, variant)
    device = networks.device
    in_dtype = variant.weight_dtype(torch)
    memory_format = variant.memory_format(torch)

    def prepare(x: Any) -> Any:
        return x.to(in_dtype).contiguous(memory_format=memory_format)

    if variant.mode == "eager":
        return Runner(variant, prepare, net)
    if variant.mode == "autocast":
        dtype = variant.compute_dtype(torch)

        def run_autocast(x: Any) -> Any:
            with torch.autocast(device.type, dtype=dtype):
                return net(x)

        return Runner(variant, prepare, run_autocast)
    if variant.mode == "cudagraph":
        if device.type != "cuda":
            raise NotImplementedError("CUDA graphs need CUDA")
        static_input = prepare(example).clone()
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.no_grad(), torch.cuda.stream(stream), precision_flags(torch, variant):
            for _ in range(3):  # warm up on a side stream (cuDNN's autotuning, allocations)
                net(static_input)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph), precision_flags(torch, variant):
            static_output = net(static_input)

        def replay(x: Any) -> Any:
            static_input.copy_(x)
            graph.replay()
            return static_output

        return Runner(variant, prepare, replay)
    if variant.mode in ("compile", "compile-cudagraphs"):
        backend = args.compile_backend
        options: dict[str, Any] = {"backend": backend, "dynamic": False}
        if variant.mode == "compile-cudagraphs":
            if device.type != "cuda" or backend != "inductor":
                raise NotImplementedError("reduce-overhead (CUDA graphs) needs CUDA and the inductor backend")
            options["mode"] = "reduce-overhead"
        compiled = torch.compile(copy.deepcopy(net), **options)
        mark_step = getattr(torch.compiler, "cudagraph_mark_step_begin", None)

        def run_compiled(x: Any) -> Any:
            if variant.mode == "compile-cudagraphs" and mark_step is not None:
                mark_step()
            return compiled(x)

        started = time.perf_counter()
        with torch.no_grad(), precision_flags(torch, variant):
            for _ in range(3 if variant.mode == "compile-cudagraphs" else 1):  # compile (+ graph recording)
                run_compiled(prepare(example))
        synchronize(torch, device)
        return Runner(variant, prepare, run_compiled, compile_s=time.perf_counter() - started)
    raise ValueError(f"unknown mode {variant.mode!r}")


def synchronize(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_callable(torch: Any, device: Any, fn: Callable[[], Any], warmup: int, runs: int, target_s: float) -> dict[str, Any]:
    """Median time of ``fn`` (ms): CUDA events per run on a GPU, ``perf_counter`` on the CPU.

    After the warm-up, one timed call sizes the run count to about ``target_s``
    seconds (between 5 and ``runs``).
    """
    for _ in range(warmup):
        fn()
    synchronize(torch, device)
    started = time.perf_counter()
    fn()
    synchronize(torch, device)
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


def timing_row(
    torch: Any, runner: Runner, scale: int, size: tuple[int, int], batch: int, x: Any, args: argparse.Namespace,
    flops_per_frame: float, peak_tflops: float | None, device: Any,
) -> dict[str, Any]:
    prepared = runner.prepare(x)
    with torch.no_grad(), precision_flags(torch, runner.variant):
        stats = time_callable(torch, device, lambda: runner.run(prepared), args.warmup, args.runs, args.target_s)
    ms_frame = stats["median_ms"] / batch
    floor_ms = 1000 * flops_per_frame / (peak_tflops * 1e12) if peak_tflops else None
    return {
        "scale": scale,
        "size": list(size),
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


# --------------------------------------------------------------------------
# parity


def _as_float64(torch: Any, codes: Any) -> Any:
    # uint16 has few kernels in torch; 10-bit codes are the same bits as int16.
    return (codes.view(torch.int16) if codes.dtype == torch.uint16 else codes).to(torch.float64)


def psnr_10bit(torch: Any, a: Any, b: Any) -> dict[str, Any]:
    difference = _as_float64(torch, a) - _as_float64(torch, b)
    mse = float((difference * difference).mean())
    return {
        "psnr_db": 10 * math.log10(1023.0**2 / mse) if mse > 0 else math.inf,
        "max_code_difference": int(difference.abs().max()),
        "fraction_differing": float((difference != 0).to(torch.float64).mean()),
    }


class Parity:
    """Per scale: the frames' network inputs and the fp32 reference's 10-bit output, then each variant's PSNR."""

    def __init__(self, torch: Any, device: Any, scale: int, frames: list[Any], networks: Networks) -> None:
        from gpgmnet import serving_torch

        self.torch, self.device, self.scale = torch, device, scale
        self.inputs = [serving_torch.network_input_from_i420(torch.from_numpy(f).to(device)) for f in frames]
        reference = build_runner(torch, networks, REFERENCE, self.inputs[0], argparse.Namespace())
        self.reference = [self.codes(reference, x) for x in self.inputs]
        self.results: dict[str, Any] = {}

    def codes(self, runner: Runner, x: Any) -> Any:
        from gpgmnet import serving_torch

        torch = self.torch
        with torch.no_grad(), precision_flags(torch, runner.variant):
            residual = runner.run(runner.prepare(x)).to(torch.float32).clone()
        return serving_torch.postprocess(x, residual, self.scale)

    def check(self, runner: Runner) -> dict[str, Any]:
        per_frame = [psnr_10bit(self.torch, self.codes(runner, x), ref) for x, ref in zip(self.inputs, self.reference)]
        psnrs = [p["psnr_db"] for p in per_frame]
        result = {
            "min_psnr_db": min(psnrs),
            "mean_psnr_db": statistics.fmean(psnrs) if all(math.isfinite(p) for p in psnrs) else math.inf,
            "max_code_difference": max(p["max_code_difference"] for p in per_frame),
            "fraction_differing": statistics.fmean(p["fraction_differing"] for p in per_frame),
            "identical": all(p["max_code_difference"] == 0 for p in per_frame),
            "frames": len(per_frame),
        }
        if runner.variant.half:
            result["passes_50db"] = min(psnrs) > PARITY_FLOOR_DB
        self.results[runner.variant.name] = result
        return result


# --------------------------------------------------------------------------
# post-processing: GPU vs numpy


def postprocess_stage(
    torch: Any, device: Any, scale: int, x: Any, residual: Any, frame: Any, args: argparse.Namespace, report: Report,
) -> dict[str, Any]:
    import numpy as np

    from gpgmnet import serving, serving_torch

    result: dict[str, Any] = {"scale": scale, "input_size": list(x.shape[2:]), "output_size": list(residual.shape[2:])}
    warmup, runs, target = args.warmup, max(args.runs // 2, 5), args.target_s / 2

    def timed(fn: Callable[[], Any]) -> float:
        return time_callable(torch, device, fn, warmup, runs, target)["median_ms"]

    device_frame = torch.from_numpy(frame).to(device)
    result["device"] = str(device)
    result["torch"] = {
        "pre_ms": timed(lambda: serving_torch.network_input_from_i420(device_frame)),
        "pre_with_upload_ms": timed(lambda: serving_torch.network_input_from_i420(torch.from_numpy(frame).to(device))),
        "bicubic_skip_ms": timed(lambda: serving_torch.bicubic_upsample(x, scale) + residual),
        "quantise_420_pack_float64_ms": timed(lambda: serving_torch.i420_from_network_output(residual)),
        "post_float64_ms": timed(lambda: serving_torch.postprocess(x, residual, scale)),
        "post_float32_ms": timed(lambda: serving_torch.postprocess(x, residual, scale, torch.float32)),
        "post_float32_no_nan_check_ms": timed(
            lambda: serving_torch.postprocess(x, residual, scale, torch.float32, check_nan=False)),
    }
    hdr64 = serving_torch.postprocess(x, residual, scale)
    hdr32 = serving_torch.postprocess(x, residual, scale, torch.float32)
    # What the Python backend does with the served tensors: DLPack out and in, no copy.
    round_trips = []
    for tensor in (device_frame, x, hdr64):
        back = torch.utils.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(tensor))
        round_trips.append(back.data_ptr() == tensor.data_ptr() and back.dtype == tensor.dtype
                           and bool((back.view(torch.uint8) == tensor.view(torch.uint8)).all()))
    result["dlpack_round_trip_ok"] = all(round_trips)
    if device.type == "cuda":
        result["torch"]["download_hdr_uint16_ms"] = timed(lambda: hdr64.cpu())
        result["torch"]["download_residual_fp32_ms"] = timed(lambda: residual.cpu())
        pinned = torch.empty(hdr64.shape, dtype=hdr64.dtype, pin_memory=True)
        result["torch"]["download_hdr_uint16_pinned_ms"] = timed(lambda: pinned.copy_(hdr64))
    result["bytes"] = {"residual_fp32": residual.numel() * 4, "hdr_uint16": hdr64.numel() * 2}

    x_np, residual_np = x.cpu().numpy(), residual.cpu().numpy()
    numpy_runs = 2 if args.quick else 3

    def cpu_timed(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(numpy_runs):
            started = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - started))
        return statistics.median(times)

    expected = serving.i420_from_network_output(residual_np + serving.bicubic_upsample(x_np, scale))
    result["cpu_numpy"] = {
        "pre_ms": cpu_timed(lambda: serving.network_input_from_i420(frame)),
        "bicubic_skip_ms": cpu_timed(lambda: residual_np + serving.bicubic_upsample(x_np, scale)),
        "quantise_420_pack_ms": cpu_timed(lambda: serving.i420_from_network_output(residual_np)),
        "post_ms": cpu_timed(lambda: serving.i420_from_network_output(residual_np + serving.bicubic_upsample(x_np, scale))),
    }
    result["speedup_post"] = result["cpu_numpy"]["post_ms"] / result["torch"]["post_float64_ms"]
    result["speedup_pre"] = result["cpu_numpy"]["pre_ms"] / result["torch"]["pre_ms"]
    pre_equal = np.array_equal(serving_torch.network_input_from_i420(device_frame).cpu().numpy(),
                               serving.network_input_from_i420(frame))
    result["equality"] = {
        "pre_bit_exact": bool(pre_equal),
        "post_float64_vs_numpy": psnr_10bit(torch, hdr64.cpu(), torch.from_numpy(expected.astype(np.int32))),
        "post_float32_vs_numpy": psnr_10bit(torch, hdr32.cpu(), torch.from_numpy(expected.astype(np.int32))),
    }
    worst = max(result["equality"][k]["max_code_difference"] for k in ("post_float64_vs_numpy", "post_float32_vs_numpy"))
    result["equality"]["within_one_code"] = worst <= 1
    if not (pre_equal and worst <= 1 and result["dlpack_round_trip_ok"]):
        report.data["ok"] = False
    return result


# --------------------------------------------------------------------------
# ONNX Runtime


def onnxruntime_stage(
    torch: Any, device: Any, network: Any, parity: Parity | None, size: tuple[int, int], args: argparse.Namespace,
    flops_per_frame: float, peak_tflops: float | None,
) -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"installed": False, "cuda_provider": False}
    providers = ort.get_available_providers()
    result: dict[str, Any] = {
        "installed": True,
        "version": ort.__version__,
        "available_providers": providers,
        "cuda_provider": "CUDAExecutionProvider" in providers,
        "tensorrt_provider": "TensorrtExecutionProvider" in providers,
    }
    if not result["cuda_provider"] or device.type != "cuda":
        result["note"] = "no CUDAExecutionProvider here (the onnxruntime-gpu build provides it): not timed"
        return result
    import numpy as np
    from export_onnx import export_onnx

    from gpgmnet.contract import NETWORK_CONDITION_NAME, NETWORK_INPUT_NAME, NETWORK_OUTPUT_NAME, Rendering
    from gpgmnet.serving import condition_one_hot

    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "gpgmnet.onnx"
        export_onnx(copy.deepcopy(network).cpu().float(), path)
        index = device.index or 0
        session = ort.InferenceSession(
            str(path),
            providers=[("CUDAExecutionProvider", {"device_id": index, "cudnn_conv_algo_search": "EXHAUSTIVE"}),
                       "CPUExecutionProvider"],
        )
        result["session_providers"] = session.get_providers()
        if session.get_providers()[0] != "CUDAExecutionProvider":
            result["note"] = "the CUDA provider did not load (missing CUDA/cuDNN libraries?): not timed"
            return result
        x = parity.inputs[0] if parity is not None else torch.rand(1, 3, *size, device=device)
        scale = network.scale
        output = torch.empty(1, 3, scale * x.shape[2], scale * x.shape[3], device=device)
        binding = session.io_binding()  # device tensors in and out: no host copies in the timing
        binding.bind_input(NETWORK_INPUT_NAME, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        condition = torch.from_numpy(condition_one_hot(Rendering())).to(device)
        binding.bind_input(NETWORK_CONDITION_NAME, "cuda", index, np.float32, tuple(condition.shape), condition.data_ptr())
        binding.bind_output(NETWORK_OUTPUT_NAME, "cuda", index, np.float32, tuple(output.shape), output.data_ptr())

        def run() -> None:
            session.run_with_iobinding(binding)

        stats = time_callable(torch, device, run, args.warmup, args.runs, args.target_s)
        ms = stats["median_ms"]
        result["timing"] = {
            **stats,
            "size": list(x.shape[2:]),
            "fps": 1000 / ms,
            "ratio_to_floor": ms / (1000 * flops_per_frame / (peak_tflops * 1e12)) if peak_tflops else None,
        }
        if parity is not None:
            from gpgmnet import serving_torch

            run()
            torch.cuda.synchronize(device)
            codes = serving_torch.postprocess(x, output, scale)
            result["parity_vs_fp32"] = psnr_10bit(torch, codes, parity.reference[0])
    return result


# --------------------------------------------------------------------------
# the table


def print_table(report: Report) -> None:
    rows = report.data["timings"]
    parity = report.data["parity"]
    header = f"{'scale':>5} {'LR size':>10} {'batch':>5}  {'variant':<28} {'ms/frame':>9} {'fps':>8} {'TFLOP/s':>8} {'x floor':>8} {'compile s':>9} {'PSNR dB':>8}"
    print("\n" + header)
    print("-" * len(header))
    for row in rows:
        p = parity.get(f"x{row['scale']}", {}).get(row["variant"], {})
        psnr = p.get("min_psnr_db")
        psnr_text = "" if not p else ("exact" if p.get("identical") else ("inf" if psnr is None or not math.isfinite(psnr) else f"{psnr:.1f}"))
        ratio = row.get("ratio_to_floor")
        compile_s = row.get("compile_s")
        print(
            f"{'x' + str(row['scale']):>5} {row['size'][0]:>4}x{row['size'][1]:<5} {row['batch']:>5}  {row['variant']:<28} "
            f"{row['ms_per_frame']:>9.3f} {row['fps']:>8.1f} {row['achieved_tflops']:>8.1f} "
            f"{'' if ratio is None else f'{ratio:.1f}':>8} {'' if compile_s is None else f'{compile_s:.1f}':>9} {psnr_text:>8}"
        )
    for scale, best in report.data["best"].items():
        print(f"best {scale}: {best['variant']} batch {best['batch']}: {best['ms_per_frame']:.3f} ms/frame, "
              f"{best['fps']:.1f} fps" + (f", {best['ratio_to_floor']:.1f}x the FLOP floor" if best.get("ratio_to_floor") else ""))
    for key, post in report.data["postprocess"].items():
        if "torch" in post:
            print(f"post-processing {key}: torch on {post['device']} {post['torch']['post_float64_ms']:.2f} ms (float64) / "
                  f"{post['torch']['post_float32_ms']:.2f} ms (float32) vs numpy {post['cpu_numpy']['post_ms']:.1f} ms; "
                  f"max code difference {post['equality']['post_float64_vs_numpy']['max_code_difference']}")
    ort_info = report.data["onnxruntime"]
    print(f"onnxruntime: {'not installed' if not ort_info.get('installed') else ort_info.get('version')}, "
          f"CUDA provider {'present' if ort_info.get('cuda_provider') else 'absent'}")
    for skipped in report.data["skipped"]:
        print(f"skipped: {skipped['what']}: {skipped['why']}")
    for error in report.data["errors"]:
        print(f"ERROR: {error['what']}: {error['error']}")


# --------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few runs (the code paths, not the figures)")
    parser.add_argument("--dry-run", action="store_true", help="--device cpu --quick: exercise the script without a GPU")
    parser.add_argument("--scenes", type=Path, help="HDR scene folder for the parity frames (e.g. ../shared/data/hdr-scenes)")
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE, help="clip for the parity frames without --scenes")
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
        run_checks(torch, args, report)
    except Exception as error:  # noqa: BLE001 - still print and write what was measured
        report.error("run", error)
    finally:
        report.save()
        print_table(report)
        if args.json:
            print(f"report: {args.json}")
    return 0 if report.data["ok"] else 1


def run_checks(torch: Any, args: argparse.Namespace, report: Report) -> None:
    from gpgmnet.checkpoint import load_network

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif args.quick:
        torch.set_num_threads(1)  # the figures mean nothing here; one thread stays quick on a shared machine
    scales = tuple(args.scale or (4, 2))
    sizes = {s: args.size or (QUICK_SIZES if args.quick else FULL_SIZES)[s] for s in scales}
    data = report.data
    data["environment"] = environment(torch, device)
    report.log(f"device {device}: {data['environment'].get('gpu', platform.processor() or 'cpu')}, torch {torch.__version__}")
    gpu_name = data["environment"].get("gpu") or ""
    peak = args.peak_tflops or next((v for k, v in MEASURED_BF16_TFLOPS.items() if k in gpu_name), None)
    data["peak_tflops"] = peak
    if peak is None:
        report.skip("ratio to the FLOP floor", "unknown dense bf16 rate for this device: pass --peak-tflops")

    networks: dict[int, Networks] = {}
    flops: dict[int, float] = {}
    for scale in scales:
        network, metadata = load_network(None, scale)
        data["weights"][f"x{scale}"] = {k: v for k, v in metadata.items() if isinstance(v, (str, int, float))}
        networks[scale] = Networks(network, device)
        with report.stage(f"FLOPs x{scale}"):
            counted = count_flops(network, sizes[scale])
            full = counted if sizes[scale] == FULL_SIZES[scale] else count_flops(network, FULL_SIZES[scale])
            flops[scale] = counted["total"]
            data["flops"][f"x{scale}"] = {
                "size": list(sizes[scale]),
                "tflop_per_frame": counted["total"] / 1e12,
                "blocks_gflop": {k: v / 1e9 for k, v in counted["blocks"].items()},
                "full_size": list(FULL_SIZES[scale]),
                "tflop_per_frame_full_size": full["total"] / 1e12,
                "floor_ms_full_size": 1000 * full["total"] / (peak * 1e12) if peak else None,
            }
            report.log(f"x{scale}: {counted['total'] / 1e12:.4f} TFLOP per frame at {sizes[scale]}; "
                       f"{full['total'] / 1e12:.3f} at {FULL_SIZES[scale]}")

    frames = make_frames(args, sizes, report)
    parities: dict[int, Parity] = {}
    runners: dict[tuple[int, str], Runner] = {}
    torch.manual_seed(0)
    examples = {s: torch.rand(1, 3, *sizes[s]).to(device) for s in scales}

    def variant_supported(variant: Variant) -> str | None:
        if device.type != "cuda" and variant.precision == "tf32":
            return "TF32 needs CUDA"
        if device.type != "cuda" and variant.mode in ("cudagraph", "compile-cudagraphs"):
            return "CUDA graphs need CUDA"
        return None

    def time_variant(scale: int, variant: Variant, batch: int = 1) -> dict[str, Any] | None:
        why = variant_supported(variant)
        if why:
            if batch == 1:
                report.skip(f"x{scale} {variant.name}", why)
            return None
        key = (scale, variant.name) if batch == 1 else (scale, f"{variant.name}@{batch}")
        x = examples[scale] if batch == 1 else examples[scale].repeat(batch, 1, 1, 1)
        try:
            runner = runners.get(key) or build_runner(torch, networks[scale], variant, x, args)
            if batch == 1:
                runners[key] = runner
            row = timing_row(torch, runner, scale, sizes[scale], batch, x, args, flops[scale], peak, device)
        except Exception as error:  # noqa: BLE001
            if device.type == "cuda":
                torch.cuda.empty_cache()
            report.error(f"x{scale} {variant.name} batch {batch}", error)
            return None
        data["timings"].append(row)
        report.save()
        report.log(f"x{scale} {variant.name:<26} batch {batch}: {row['ms_per_frame']:8.3f} ms/frame "
                   f"{row['fps']:8.1f} fps" + (f"  {row['ratio_to_floor']:.1f}x floor" if row["ratio_to_floor"] else "")
                   + (f"  (compile {row['compile_s']:.1f} s)" if row["compile_s"] else ""))
        if batch == 1 and scale in parities:
            with report.stage(f"parity x{scale} {variant.name}"):
                result = parities[scale].check(runner)
                data["parity"].setdefault(f"x{scale}", {})[variant.name] = result
                if result.get("passes_50db") is False and not args.quick:
                    data["ok"] = False
        return row

    # 1. eager variants at batch 1, with parity
    for scale in scales:
        if scale in frames:
            with report.stage(f"parity reference x{scale}"):
                parities[scale] = Parity(torch, device, scale, frames[scale], networks[scale])
                data["parity"][f"x{scale}"] = {"reference": REFERENCE.name, "floor_db": PARITY_FLOOR_DB}
        for variant in QUICK_EAGER_VARIANTS if args.quick else EAGER_VARIANTS:
            if report.enough_time(f"x{scale} {variant.name}", 5):
                time_variant(scale, variant)
    # 2. CUDA graphs
    for scale in scales:
        for variant in GRAPH_VARIANTS:
            if report.enough_time(f"x{scale} {variant.name}", 10):
                time_variant(scale, variant)
    # 3. post-processing, GPU vs numpy
    for scale in scales:
        if not report.enough_time(f"post-processing x{scale}", 20):
            continue
        with report.stage(f"post-processing x{scale}"):
            parity = parities.get(scale)
            x = parity.inputs[0] if parity else examples[scale]
            frame = frames[scale][0] if scale in frames else synthetic_frames(sizes[scale], 1)[0]
            runner = runners.get((scale, REFERENCE.name)) or build_runner(torch, networks[scale], REFERENCE, x, args)
            with torch.no_grad(), precision_flags(torch, REFERENCE):
                residual = runner.run(runner.prepare(x)).float().clone()
            post = postprocess_stage(torch, device, scale, x, residual, frame, args, report)
            data["postprocess"][f"x{scale}"] = post
            report.log(f"x{scale} post-processing: torch {post['torch']['post_float64_ms']:.2f} ms vs numpy "
                       f"{post['cpu_numpy']['post_ms']:.1f} ms; pre {post['torch']['pre_ms']:.2f} vs "
                       f"{post['cpu_numpy']['pre_ms']:.1f} ms; max code difference "
                       f"{post['equality']['post_float64_vs_numpy']['max_code_difference']}")
    # 4. ONNX Runtime's CUDA provider (x4)
    ort_scale = 4 if 4 in scales else scales[0]
    if report.enough_time("onnxruntime", 30):
        with report.stage("onnxruntime"):
            data["onnxruntime"] = onnxruntime_stage(
                torch, device, networks[ort_scale].network, parities.get(ort_scale), sizes[ort_scale], args,
                flops[ort_scale], peak,
            )
            report.log(f"onnxruntime: CUDA provider {'present' if data['onnxruntime'].get('cuda_provider') else 'absent'}")
    # 5. batch sweep
    for scale in scales[:1] if args.quick else scales:
        for variant in SWEEP_VARIANTS[:1] if args.quick else SWEEP_VARIANTS:
            for batch in (QUICK_BATCHES if args.quick else FULL_BATCHES)[scale]:
                if report.enough_time(f"x{scale} {variant.name} batch {batch}", 15):
                    time_variant(scale, variant, batch)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    # 6. torch.compile, last: the slowest to prepare
    if args.no_compile:
        report.skip("torch.compile", "--no-compile")
    else:
        for variant in COMPILE_VARIANTS:
            for scale in scales[:1] if args.quick else scales:
                if variant_supported(variant):
                    report.skip(f"x{scale} {variant.name}", variant_supported(variant) or "")
                elif report.enough_time(f"x{scale} {variant.name}", 5 if args.quick else 100):
                    time_variant(scale, variant)
            if args.quick:
                break  # one compiled variant exercises the path
    # the best per scale
    for scale in scales:
        rows = [r for r in data["timings"] if r["scale"] == scale]
        if rows:
            data["best"][f"x{scale}"] = min(rows, key=lambda r: r["ms_per_frame"])
            batch1 = [r for r in rows if r["batch"] == 1]
            if batch1:
                data["best"][f"x{scale}_batch1"] = min(batch1, key=lambda r: r["ms_per_frame"])


if __name__ == "__main__":
    sys.exit(main())
