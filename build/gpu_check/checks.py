"""The driver: the stages in order, each recorded in the report and failing on its own."""

from __future__ import annotations

import argparse

import torch

from build.gpu_check.frames import make_frames
from build.gpu_check.onnx_runtime import check_onnxruntime
from build.gpu_check.postprocess import check_postprocessing
from build.gpu_check.report import Report
from build.gpu_check.session import open_session
from build.gpu_check.timing import record_best, sweep_batches, time_compiled, time_cuda_graphs, time_eager_variants


def run_checks(args: argparse.Namespace, report: Report) -> None:
    """Run every stage into ``report``: FLOPs, timing with parity, post-processing, ONNX Runtime, sweep, compile."""
    session = open_session(args, report)  # the environment, the networks, their FLOPs
    session.frames = make_frames(args, session.sizes, report)
    torch.manual_seed(0)
    session.examples = {s: torch.rand(1, 3, *session.sizes[s]).to(session.device) for s in session.scales}
    time_eager_variants(session)  # 1. eager variants at batch 1, with parity
    time_cuda_graphs(session)  # 2. CUDA graphs
    check_postprocessing(session)  # 3. post-processing, GPU vs numpy
    check_onnxruntime(session)  # 4. ONNX Runtime's CUDA provider (x4)
    sweep_batches(session)  # 5. batch sweep
    time_compiled(session)  # 6. torch.compile, last: the slowest to prepare
    record_best(session)
