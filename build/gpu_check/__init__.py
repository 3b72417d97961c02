"""GPGMNet on one CUDA GPU: speed against the FLOP floor, parity of the fast variants, the GPU post-processing.

One prepared script, end to end in under 8 minutes on an H200 (``--time-budget``
guards it: the optional stages left when the budget runs out are skipped and
listed in the report). It needs PyTorch with CUDA, numpy and OpenCV; onnxruntime
is optional. Run it as ``python -m build.gpu_check`` (from the repository root,
or from anywhere once the project is installed in the environment).

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
   (``sritm_serving.processing_torch.postprocess``, 10-bit I420) against the fp32
   reference; PSNR over all 10-bit samples. fp16/bf16 must stay above 50 dB.
   Frames: ``--scenes DIR`` (HDR masters through the training data pipeline),
   else the sample clip (up-sized and cropped), else synthetic structured frames.
4. **Post-processing** on the GPU (bicubic skip, legal-range clamp, 10-bit
   rounding, 4:2:0, I420) against the numpy path of the CPU server
   (``sritm_serving.processing``): time and equality; pre-processing likewise.
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

    PYTHONUNBUFFERED=1 python3 -m build.gpu_check --json $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log

Weights: ``weights/gpgmnet_x{s}.pt`` when present, else the seeded untrained
network; parity figures depend on the weights (the report names them).
"""

# The package: cli (arguments, exit codes; no torch until the checks start), checks (the driver), session (what the
# stages share), then one module per stage: flops, timing, parity, postprocess, onnx_runtime, report.

import os

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # before cv2 is imported: --scenes reads EXR
