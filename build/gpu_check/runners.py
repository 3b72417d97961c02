"""Running the network as a variant: the per-dtype copies, the TF32 switches, eager, autocast, CUDA graphs, compile."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from build.gpu_check.variants import Variant


@contextmanager
def precision_flags(variant: Variant) -> Iterator[None]:
    """TF32 only for the tf32 variants: "fp32" is strict fp32 (cuDNN allows TF32 by default)."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = variant.precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Networks:
    """Copies of one scale's network per (weight dtype, memory format), made once.

    Args:
        network: the scale's network, as loaded (with its bicubic skip; the copies have none).
        device: where the copies live.
    """

    def __init__(self, network: Any, device: torch.device) -> None:
        self.network = network
        self.device = device
        self.copies: dict[tuple[Any, bool], Any] = {}

    def get(self, variant: Variant) -> Any:
        """The residual-only copy in ``variant``'s weight dtype and memory format, in eval mode."""
        key = (variant.weight_dtype, variant.channels_last)
        if key not in self.copies:
            net = copy.deepcopy(self.network)
            net.bicubic_skip = False
            net.requires_grad_(False)
            self.copies[key] = net.to(self.device, key[0], memory_format=variant.memory_format).eval()
        return self.copies[key]


@dataclass
class Runner:
    """A variant made ready to run: ``run(prepare(x))`` is the residual of the fp32 input ``x``."""

    variant: Variant
    prepare: Callable[[Any], Any]
    run: Callable[[Any], Any]  # prepared input -> residual (variant dtype); output may be reused by the next call
    compile_s: float | None = None


def build_runner(networks: Networks, variant: Variant, example: Any, compile_backend: str = "inductor") -> Runner:
    """A callable for ``variant``; ``example`` (fp32, N×3×h×w on the device) fixes the shape of graphs."""
    net = networks.get(variant)
    in_dtype = variant.weight_dtype
    memory_format = variant.memory_format

    def prepare(x: Any) -> Any:
        return x.to(in_dtype).contiguous(memory_format=memory_format)

    if variant.mode == "eager":
        return Runner(variant, prepare, net)
    if variant.mode == "autocast":
        device_type, dtype = networks.device.type, variant.compute_dtype

        def run_autocast(x: Any) -> Any:
            with torch.autocast(device_type, dtype=dtype):
                return net(x)

        return Runner(variant, prepare, run_autocast)
    if variant.mode == "cudagraph":
        return _graph_runner(net, networks.device, variant, prepare, example)
    if variant.mode in ("compile", "compile-cudagraphs"):
        return _compiled_runner(net, networks.device, variant, prepare, example, compile_backend)
    raise ValueError(f"unknown mode {variant.mode!r}")


def _graph_runner(net: Any, device: torch.device, variant: Variant, prepare: Callable[[Any], Any],
                  example: Any) -> Runner:
    """The network captured in a CUDA graph for ``example``'s shape: a call copies the input in and replays it."""
    if device.type != "cuda":
        raise NotImplementedError("CUDA graphs need CUDA")
    static_input = prepare(example).clone()
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.no_grad(), torch.cuda.stream(stream), precision_flags(variant):
        for _ in range(3):  # warm up on a side stream (cuDNN's autotuning, allocations)
            net(static_input)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph), precision_flags(variant):
        static_output = net(static_input)

    def replay(x: Any) -> Any:
        static_input.copy_(x)
        graph.replay()
        return static_output

    return Runner(variant, prepare, replay)


def _compiled_runner(net: Any, device: torch.device, variant: Variant, prepare: Callable[[Any], Any], example: Any,
                     backend: str) -> Runner:
    """The network through ``torch.compile`` (``reduce-overhead`` for compile-cudagraphs), compiled on ``example``."""
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
    with torch.no_grad(), precision_flags(variant):
        for _ in range(3 if variant.mode == "compile-cudagraphs" else 1):  # compile (+ graph recording)
            run_compiled(prepare(example))
    synchronize(device)
    return Runner(variant, prepare, run_compiled, compile_s=time.perf_counter() - started)
