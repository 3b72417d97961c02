#!/usr/bin/env python
"""Build a TensorRT engine (``.plan``) from the exported ONNX graph, for the GPU repository.

fp16, one optimisation profile per scale (min/opt/max frame sizes of the
low-resolution input), and a timing cache so rebuilds take seconds. It prints
the equivalent ``trtexec`` command, so a platform team can rebuild the engine
on the exact GPU and TensorRT version of its fleet (a plan only runs where it was
built).

It needs TensorRT's Python package and an NVIDIA GPU; without them it stops with
a message that says so. Run it where you will serve (``python -m build.build_engine --scale 4``),
then ``python -m build.assemble_repository --target gpu``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from sritm_core.contract import NETWORK_INPUT_NAME, SCALES, FrameLimits

BUILD_DIR = Path(__file__).resolve().parent
ARTIFACTS_DIR = BUILD_DIR / "artifacts"
DEFAULT_OPT_SIZE = {4: (540, 960), 2: (1080, 1920)}
WORKSPACE_GIB = 8


class EngineBuildError(RuntimeError):
    """The engine cannot be built here; the message says why and what to do."""


@dataclass(frozen=True)
class ShapeProfile:
    """Low-resolution frame sizes (height, width) an engine accepts, and the one it is tuned for."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def __post_init__(self) -> None:
        for label, (height, width) in (("min", self.min), ("opt", self.opt), ("max", self.max)):
            if height < 1 or width < 1:
                raise ValueError(f"profile {label} size {height}x{width} must be positive")
        for axis, name in ((0, "height"), (1, "width")):
            if not self.min[axis] <= self.opt[axis] <= self.max[axis]:
                raise ValueError(
                    f"profile {name}s must satisfy min <= opt <= max, got "
                    f"{self.min[axis]} / {self.opt[axis]} / {self.max[axis]}"
                )

    def tensor_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """The network input's N×3×h×w shapes for min, opt and max."""
        return tuple((1, 3, *size) for size in (self.min, self.opt, self.max))  # type: ignore[return-value]

    @classmethod
    def default(cls, scale: int) -> ShapeProfile:
        """The pre-processor's default limits, tuned for 2160p output (540×960 at ×4, 1080×1920 at ×2)."""
        limits = FrameLimits()
        return cls(
            min=(limits.min_height, limits.min_width),
            opt=DEFAULT_OPT_SIZE[scale],
            max=(limits.max_height, limits.max_width),
        )


def parse_size(text: str) -> tuple[int, int]:
    """``540x960`` → (540, 960): height × width."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is HEIGHTxWIDTH, like 540x960, not {text!r}") from None
    return height, width


def trtexec_command(onnx_path: Path, plan_path: Path, profile: ShapeProfile, timing_cache: Path) -> str:
    """The ``trtexec`` command line that builds the same engine (fp16, ``profile``, the timing cache)."""
    def shape(size: tuple[int, int]) -> str:
        return f"{NETWORK_INPUT_NAME}:1x3x{size[0]}x{size[1]}"

    return shlex.join([
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={plan_path}",
        "--fp16",
        f"--minShapes={shape(profile.min)}",
        f"--optShapes={shape(profile.opt)}",
        f"--maxShapes={shape(profile.max)}",
        f"--timingCacheFile={timing_cache}",
        f"--memPoolSize=workspace:{WORKSPACE_GIB * 1024}M",
    ])


def import_tensorrt():  # type: ignore[no-untyped-def]
    """The ``tensorrt`` module; :class:`EngineBuildError` when it is not installed."""
    try:
        import tensorrt
    except ImportError:
        raise EngineBuildError(
            "TensorRT is not installed: building a .plan needs TensorRT and an NVIDIA GPU "
            "(use the NGC TensorRT or Triton container, or `pip install tensorrt` on a GPU machine); "
            "the CPU repository (`make repository`) needs no engine"
        ) from None
    return tensorrt


def build_engine(onnx_path: Path, plan_path: Path, profile: ShapeProfile, timing_cache: Path) -> Path:
    """Build ``onnx_path`` into the fp16 TensorRT engine ``plan_path`` for ``profile``; returns ``plan_path``.

    The timing cache is read when it exists and rewritten after the build.

    Raises:
        EngineBuildError: TensorRT or a usable GPU is missing, or the graph does not parse or build.
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except (RuntimeError, TypeError) as error:  # pybind11 reports a failed CUDA init as TypeError
        raise EngineBuildError(f"TensorRT found no usable NVIDIA GPU ({error})") from None
    if builder is None:
        raise EngineBuildError("TensorRT found no usable NVIDIA GPU")
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT < 10 needs it spelled out
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_GIB << 30)
    optimisation_profile = builder.create_optimization_profile()
    optimisation_profile.set_shape(NETWORK_INPUT_NAME, *profile.tensor_shapes())
    config.add_optimization_profile(optimisation_profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return plan_path


def main(argv: list[str] | None = None) -> int:
    """Print the trtexec command and build the engine; 0 on success, 2 when it cannot be built here."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, choices=SCALES, required=True)
    parser.add_argument("--onnx", type=Path, help="default: build/artifacts/gpgmnet_x{scale}.onnx")
    parser.add_argument("--plan", type=Path, help="default: build/artifacts/gpgmnet_x{scale}.plan")
    parser.add_argument("--min-size", type=parse_size, help="HEIGHTxWIDTH of the low-resolution input")
    parser.add_argument("--opt-size", type=parse_size, help="default 540x960 for x4, 1080x1920 for x2")
    parser.add_argument("--max-size", type=parse_size, help="default: the pre-processor's maximum")
    parser.add_argument("--timing-cache", type=Path, default=ARTIFACTS_DIR / "tensorrt_timing.cache")
    parser.add_argument("--print-only", action="store_true", help="print the trtexec command and stop")
    args = parser.parse_args(argv)
    default = ShapeProfile.default(args.scale)
    try:
        profile = ShapeProfile(
            min=args.min_size or default.min, opt=args.opt_size or default.opt, max=args.max_size or default.max
        )
    except ValueError as error:
        parser.error(str(error))
    onnx_path = args.onnx or ARTIFACTS_DIR / f"gpgmnet_x{args.scale}.onnx"
    plan_path = args.plan or ARTIFACTS_DIR / f"gpgmnet_x{args.scale}.plan"
    print("equivalent trtexec command:\n  " + trtexec_command(onnx_path, plan_path, profile, args.timing_cache))
    if args.print_only:
        return 0
    if not onnx_path.is_file():
        print(f"error: {onnx_path} does not exist: run `python -m build.export_onnx` first", file=sys.stderr)
        return 2
    try:
        build_engine(onnx_path, plan_path, profile, args.timing_cache)
    except EngineBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"x{args.scale}: {plan_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
