"""The GPU serving path, as far as a CPU can test it.

* ``sritm_serving.processing_torch`` (the torch pre/post-processing that runs where the
  network runs) against the numpy path of the CPU server;
* DLPack round trips, and the Python-backend models' torch path driven with CPU
  tensors through a stand-in for ``triton_python_backend_utils`` (the real one
  lives inside the Triton stub; ``test_torch_paths_on_a_real_server`` runs them
  there);
* ``assemble_repository.py --target gpu-torch``;
* ``python -m build.gpu_check``: its ``--dry-run`` on the CPU, and its one-line exit
  without CUDA.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.utils.dlpack
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from build.assemble_repository import CPU_MODEL_PY, GPU_TORCH_MODEL_PY, assemble, network_config
from gpgmnet.checkpoint import load_network
from sritm_core import colour
from sritm_core.contract import HDR_CODE_SCALE, INPUT_NAME, NETWORK_INPUT_NAME, NETWORK_OUTPUT_NAME, OUTPUT_NAME
from sritm_serving import processing, processing_torch, triton_util

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def generated_repository() -> Path:
    """The generated pre/post-processors, ensembles and gpu-torch network models (no artifact needed)."""
    repository = Path(tempfile.mkdtemp(prefix="sritm-gpu-path-"))
    assemble("gpu-torch", (2, 4), repository / "no-artifacts", repository)
    return repository


PB_UTILS_FILE = next(
    Path(sys.prefix).glob("lib/python3*/site-packages/pytriton/tritonserver/backends/python/triton_python_backend_utils.py")
)


def random_i420(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3 * height // 2, width), dtype=np.uint8)


# --------------------------------------------------------------------------
# processing_torch against the numpy path


@pytest.mark.parametrize("height, width", [(16, 16), (18, 22), (38, 62), (64, 112)])
def test_torch_preprocessing_is_bit_exact(height, width):
    i420 = random_i420(height, width, seed=height * width)
    expected = processing.network_input_from_i420(i420)
    actual = processing_torch.network_input_from_i420(torch.from_numpy(i420))
    assert actual.dtype == torch.float32 and tuple(actual.shape) == expected.shape
    np.testing.assert_array_equal(actual.numpy(), expected)


@pytest.mark.parametrize("scale, height, width", [(4, 16, 16), (4, 18, 22), (2, 38, 62), (2, 64, 112)])
def test_torch_quantisation_is_bit_exact_in_float32_and_within_one_code_in_float64(scale, height, width):
    rng = np.random.default_rng(scale + height)
    output = rng.uniform(-0.1, 1.1, (1, 3, scale * height, scale * width)).astype(np.float32)  # beyond legal
    expected = processing.i420_from_network_output(output)
    exact = processing_torch.i420_from_network_output(torch.from_numpy(output))
    assert exact.dtype == torch.uint16 and tuple(exact.shape) == expected.shape
    np.testing.assert_array_equal(exact.numpy(), expected)
    wide = processing_torch.i420_from_network_output(torch.from_numpy(output), torch.float64)
    assert np.abs(wide.numpy().astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("scale, height, width", [(4, 16, 16), (4, 18, 22), (2, 30, 44)])
def test_torch_postprocessing_with_the_skip_is_within_one_code(scale, height, width):
    """The skip is torch's bicubic here, OpenCV's in numpy (they agree to ~4e-7): ≤ 1 code, almost all equal."""
    i420 = random_i420(height, width, seed=7)
    network_input = processing.network_input_from_i420(i420)
    residual = np.random.default_rng(1).normal(0, 0.05, (1, 3, scale * height, scale * width)).astype(np.float32)
    expected = processing.postprocess(network_input, residual, scale)
    for compute_dtype in (torch.float64, torch.float32):
        actual = processing_torch.postprocess(
            torch.from_numpy(network_input), torch.from_numpy(residual), scale, compute_dtype
        )
        difference = np.abs(actual.numpy().astype(int) - expected.astype(int))
        assert difference.max() <= 1 and (difference == 0).mean() > 0.999


def test_torch_rounding_clamping_and_nan_follow_the_colour_module():
    """Exact half codes round to even, out-of-range codes clamp to legal, NaN is refused: as in the numpy path."""
    codes = np.array([[64.5, 65.5, 100.5, 939.5, 2000.0, -50.0]] * 4)  # luma 4×6; each 2×2 chroma block is uniform
    chroma = np.repeat(np.repeat(np.array([[511.5, 512.5, 1500.0], [-3.0, 63.5, 960.5]]), 2, 0), 2, 1)
    output = (np.stack([codes, chroma, chroma[::-1]])[None] / HDR_CODE_SCALE).astype(np.float64)
    expected = processing.i420_from_network_output(output)
    np.testing.assert_array_equal(processing_torch.i420_from_network_output(torch.from_numpy(output)).numpy(), expected)
    assert list(expected[:4, :6][0]) == [64, 66, 100, 940, 940, 64]
    output[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        processing.i420_from_network_output(output)
    with pytest.raises(ValueError, match="NaN"):
        processing_torch.i420_from_network_output(torch.from_numpy(output))


def test_torch_legal_range_comes_from_the_colour_module(monkeypatch):
    """No second copy of the limits: change colour.legal_range and the torch path follows."""
    output = torch.full((1, 3, 4, 4), 2.0)  # far above the legal maximum
    output[0, :, 2:, 2:] = -1.0  # far below the minimum

    def extremes() -> tuple[int, int, int, int]:
        y, u, v = (p.to(torch.int32)
                   for p in processing_torch.unpack_i420(processing_torch.i420_from_network_output(output)))
        return int(y.min()), int(y.max()), int(torch.cat([u, v]).min()), int(torch.cat([u, v]).max())

    assert extremes() == (64, 940, 64, 960)
    monkeypatch.setattr(colour, "legal_range",
                        lambda bits: colour.LegalRange(y_min=100, y_max=800, c_min=90, c_max=700))
    assert extremes() == (100, 800, 90, 700)


def test_i420_layout_matches_the_colour_module_when_height_is_not_a_multiple_of_4():
    i420 = random_i420(18, 22, seed=3)
    for mine, theirs in zip(processing_torch.unpack_i420(torch.from_numpy(i420)), colour.unpack_i420(i420)):
        np.testing.assert_array_equal(mine.numpy(), theirs)
    np.testing.assert_array_equal(
        processing_torch.pack_i420(*processing_torch.unpack_i420(torch.from_numpy(i420))).numpy(), i420
    )


# --------------------------------------------------------------------------
# DLPack and the Python-backend models, with a stand-in for pb_utils


class FakeTensor:
    """``pb_utils.Tensor`` as the models use it; ``on_gpu`` makes it report device memory (data stays on the CPU)."""

    def __init__(self, name: str, data: Any, on_gpu: bool = False) -> None:
        self._name, self._data, self._on_gpu = name, data, on_gpu

    @staticmethod
    def from_dlpack(name: str, capsule: Any) -> FakeTensor:
        return FakeTensor(name, torch.utils.dlpack.from_dlpack(capsule))

    def name(self) -> str:
        return self._name

    def shape(self) -> list[int]:
        return list(self._data.shape)

    def is_cpu(self) -> bool:
        return not self._on_gpu

    def as_numpy(self) -> np.ndarray:
        if self._on_gpu:
            raise RuntimeError("as_numpy() of a tensor in GPU memory")
        return self._data.numpy() if isinstance(self._data, torch.Tensor) else self._data

    def to_dlpack(self) -> Any:
        data = self._data if isinstance(self._data, torch.Tensor) else torch.from_numpy(self._data)
        return torch.utils.dlpack.to_dlpack(data)

    def tensor(self) -> torch.Tensor:
        return self._data if isinstance(self._data, torch.Tensor) else torch.from_numpy(self._data)


class FakeRequest:
    def __init__(self, *tensors: FakeTensor) -> None:
        self._tensors = list(tensors)

    def inputs(self) -> list[FakeTensor]:
        return self._tensors


class FakeResponse:
    def __init__(self, output_tensors: list[FakeTensor] | None = None, error: Any = None) -> None:
        self.output_tensors, self.error = output_tensors or [], error


class FakeError:
    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        self.message, self.code = message, code


def fake_pb_utils() -> types.ModuleType:
    """The real helper module of the Python backend, plus the classes the Triton stub adds at run time."""
    spec = importlib.util.spec_from_file_location("triton_python_backend_utils", PB_UTILS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.Tensor, module.InferenceResponse, module.TritonError = FakeTensor, FakeResponse, FakeError
    return module


@pytest.fixture
def pb_utils(monkeypatch):
    module = fake_pb_utils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    monkeypatch.delitem(sys.modules, "sritm_serving.network_torch", raising=False)
    yield module
    sys.modules.pop("sritm_serving.network_torch", None)


def config_json(config_text: str, **parameters: str) -> str:
    config = text_format.Parse(config_text, model_config_pb2.ModelConfig())
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True))


def load_model(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TritonPythonModel()


def processor(name: str, kind: str = "CPU", **parameters: str) -> Any:
    model = load_model(generated_repository() / name / "1" / "model.py", f"test_{name}_model")
    model.initialize({
        "model_config": config_json((generated_repository() / name / "config.pbtxt").read_text(), **parameters),
        "model_instance_kind": kind, "model_instance_device_id": "0", "model_name": name,
        "model_repository": str(generated_repository() / name), "model_version": "1",
    })
    return model


def test_dlpack_round_trips_preserve_data_and_share_memory(pb_utils):
    for dtype in (torch.uint8, torch.uint16, torch.float32, torch.float16, torch.bfloat16):
        original = torch.arange(64, 64 + 70, dtype=torch.int32).to(dtype).reshape(1, 2, 5, 7)
        through = torch.utils.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(original))
        assert through.dtype == dtype and through.data_ptr() == original.data_ptr()
        assert torch.equal(through.to(torch.float64), original.to(torch.float64))
        out = processing_torch.to_triton(pb_utils, "X", original)  # torch -> "pb_utils" -> torch
        back = processing_torch.from_triton(out)
        assert back.data_ptr() == original.data_ptr() and back.dtype == dtype
        assert torch.equal(back.to(torch.float64), original.to(torch.float64))
    frame = random_i420(16, 24, seed=0)  # numpy (as Triton hands CPU inputs) -> torch, no copy
    as_torch = processing_torch.from_triton(FakeTensor(INPUT_NAME, frame))
    assert as_torch.data_ptr() == frame.ctypes.data
    np.testing.assert_array_equal(as_torch.numpy(), frame)
    strided = torch.rand(1, 3, 4, 6).contiguous(memory_format=torch.channels_last)
    sent = processing_torch.to_triton(pb_utils, "Y", strided)  # the backend takes C-order only
    assert (processing_torch.from_triton(sent).is_contiguous()
            and torch.equal(processing_torch.from_triton(sent), strided))


def test_processing_device_rules():
    assert triton_util.processing_device({}, {"model_instance_kind": "CPU"}) is None
    assert triton_util.processing_device(
        {}, {"model_instance_kind": "GPU", "model_instance_device_id": "1"}
    ) == "cuda:1"
    assert triton_util.processing_device({"torch_device": "cpu"}, {"model_instance_kind": "GPU"}) == "cpu"
    assert triton_util.processing_device({"torch_device": " "}, {}) is None


CPU_PROCESSORS_SCRIPT = """
import json, importlib.util, sys
from pathlib import Path
import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

class Tensor:
    def __init__(self, name, data): self._name, self._data = name, data
    def name(self): return self._name
    def shape(self): return list(self._data.shape)
    def is_cpu(self): return True
    def as_numpy(self): return self._data

class Request:
    def __init__(self, *tensors): self._tensors = tensors
    def inputs(self): return list(self._tensors)

class Response:
    def __init__(self, output_tensors=None, error=None): self.output_tensors, self.error = output_tensors, error

pb_utils_file, repository, names = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
spec = importlib.util.spec_from_file_location("triton_python_backend_utils", pb_utils_file)
pb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pb)
pb.Tensor, pb.InferenceResponse, pb.TritonError = Tensor, Response, None
sys.modules["triton_python_backend_utils"] = pb
models = {}
for name in ("sritm_preprocess", "sritm_postprocess"):
    config = text_format.Parse((repository / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    spec = importlib.util.spec_from_file_location(name, repository / name / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    models[name] = module.TritonPythonModel()
    models[name].initialize({
        "model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
        "model_instance_kind": "CPU", "model_instance_device_id": "0",
        "model_repository": str(repository / name), "model_version": "1",
    })
from sritm_serving import processing
frame = np.random.default_rng(0).integers(0, 256, (24, 16), dtype=np.uint8)
lr, *_ = models["sritm_preprocess"].execute([Request(Tensor(names[0], frame))])[0].output_tensors
residual = np.full((1, 3, 64, 64), 0.01, np.float32)
(hdr,) = models["sritm_postprocess"].execute(
    [Request(Tensor(names[1], lr.as_numpy()), Tensor(names[2], residual))]
)[0].output_tensors
x = processing.network_input_from_i420(frame)
assert np.array_equal(hdr.as_numpy(), processing.postprocess(x, residual, 4))
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""


def test_cpu_path_of_the_processors_does_not_import_torch(tmp_path):
    """The committed pre/post-processors on host tensors: the numpy path, and torch is never imported."""
    script = tmp_path / "cpu_processors.py"
    script.write_text(CPU_PROCESSORS_SCRIPT)
    completed = subprocess.run(
        [sys.executable, str(script), str(PB_UTILS_FILE), str(generated_repository()), INPUT_NAME, NETWORK_INPUT_NAME,
         NETWORK_OUTPUT_NAME],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert completed.returncode == 0 and completed.stdout.strip() == "ok", completed.stderr


@pytest.mark.parametrize("how", ["tensors in GPU memory", "torch_device parameter"])
def test_torch_path_of_the_processors_matches_the_numpy_path(pb_utils, how):
    """Inputs that arrive in (simulated) GPU memory, or a torch_device: DLPack in, processing_torch, DLPack out."""
    on_gpu = how == "tensors in GPU memory"
    parameters = {} if on_gpu else {"torch_device": "cpu"}
    pre, post = processor("sritm_preprocess", **parameters), processor("sritm_postprocess", **parameters)
    frame = random_i420(18, 22, seed=5)
    lr, *_ = pre.execute([FakeRequest(FakeTensor(INPUT_NAME, torch.from_numpy(frame), on_gpu))])[0].output_tensors
    assert lr.name() == NETWORK_INPUT_NAME and lr.tensor().dtype == torch.float32
    np.testing.assert_array_equal(lr.tensor().numpy(), processing.network_input_from_i420(frame))
    residual = np.random.default_rng(2).normal(0, 0.05, (1, 3, 72, 88)).astype(np.float32)
    (hdr,) = post.execute([FakeRequest(
        FakeTensor(NETWORK_INPUT_NAME, lr.tensor(), on_gpu),
        FakeTensor(NETWORK_OUTPUT_NAME, torch.from_numpy(residual), on_gpu),
    )])[0].output_tensors
    assert hdr.name() == OUTPUT_NAME and hdr.tensor().dtype == torch.uint16
    x = processing.network_input_from_i420(frame)
    expected = processing.postprocess(x, residual, 4)
    assert np.abs(hdr.tensor().numpy().astype(int) - expected.astype(int)).max() <= 1
    # A residual of no served scale is the caller's error (INVALID_ARG), as on the numpy path.
    bad = FakeTensor(NETWORK_OUTPUT_NAME, torch.zeros(1, 3, 54, 66), on_gpu)
    (response,) = post.execute([FakeRequest(FakeTensor(NETWORK_INPUT_NAME, lr.tensor(), on_gpu), bad)])
    assert response.error.code == FakeError.INVALID_ARG and "18×22" in response.error.message


# --------------------------------------------------------------------------
# the gpu-torch target


def parsed(config: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(config, model_config_pb2.ModelConfig())


def tensor_section(config: str) -> tuple[object, ...]:
    """The batch size, inputs and outputs of a config, as protobuf reads them."""
    model = parsed(config)
    return model.max_batch_size, list(model.input), list(model.output)


def test_gpu_torch_config_has_the_cpu_tensors_on_a_gpu():
    cpu, torch_config = network_config(4, "cpu"), network_config(4, "gpu-torch")
    assert tensor_section(torch_config) == tensor_section(cpu)
    model = parsed(torch_config)
    assert (model.backend, model.platform) == ("python", "")
    assert [(g.kind, g.count) for g in model.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_GPU, 1)]
    for key, value in (("precision", "fp16"), ("checkpoint", ""), ("scale", "4"),
                       ("FORCE_CPU_ONLY_INPUT_TENSORS", "no"), ("random_weights", "no")):
        assert model.parameters[key].string_value == value, key
    two = parsed(network_config(2, "gpu-torch", precision="bf16", instances=2))
    assert two.parameters["precision"].string_value == "bf16" and two.instance_group[0].count == 2
    with pytest.raises(ValueError, match="precision"):
        network_config(4, "gpu-torch", precision="int8")


def test_assemble_gpu_torch_needs_no_artifact_and_writes_a_one_line_model(tmp_path):
    written = assemble("gpu-torch", (2, 4), tmp_path / "no-artifacts", tmp_path)
    assert written == [tmp_path / "gpgmnet_x2", tmp_path / "gpgmnet_x4"]
    for model_dir in written:
        assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.py"]
        model_py = (model_dir / "1" / "model.py").read_text()
        assert model_py == GPU_TORCH_MODEL_PY != CPU_MODEL_PY
        assert [line for line in model_py.splitlines() if line.startswith("from ")] == [
            "from sritm_serving.network_torch import TritonPythonModel"
        ]
    assert (tmp_path / "gpgmnet_x4" / "config.pbtxt").read_text() == network_config(4, "gpu-torch")
    from gpgmnet import GPGMNet
    from gpgmnet.checkpoint import save_checkpoint

    checkpoint = tmp_path / "x4.pt"
    settings = {"scale": 4, "num_features": 8, "num_modules": 1, "conventions": 7, "classical_skip": [1]}
    save_checkpoint(checkpoint, GPGMNet(**settings), settings, step=0)
    assemble("gpu-torch", (4,), tmp_path, tmp_path, checkpoint=str(tmp_path / "x{scale}.pt"), precision="bf16")
    config = parsed((tmp_path / "gpgmnet_x4" / "config.pbtxt").read_text())
    assert config.parameters["checkpoint"].string_value == str(checkpoint)
    assert config.parameters["precision"].string_value == "bf16"
    # The post-processor learns the checkpoint's classical skip from it (the torch network reads the rest at load).
    post = parsed((tmp_path / "sritm_postprocess" / "config.pbtxt").read_text())
    assert post.parameters["classical_skip_x4"].string_value == "bt2408"
    with pytest.raises(FileNotFoundError, match="x2.pt"):
        assemble("gpu-torch", (2,), tmp_path, tmp_path, checkpoint=str(tmp_path / "x{scale}.pt"))


def test_assemble_command_line_for_gpu_torch(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "build.assemble_repository", "--target", "gpu-torch", "--scale", "4",
         "--repository", str(tmp_path), "--precision", "bf16"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"gpu-torch: {tmp_path / 'gpgmnet_x4'}"
    refused = subprocess.run([sys.executable, "-m", "build.assemble_repository", "--target", "cpu",
                              "--precision", "bf16", "--repository", str(tmp_path)],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert refused.returncode == 2 and "gpu-torch" in refused.stderr


def torch_network_model(repository: Path, kind: str, **parameters: str) -> Any:
    model = load_model(repository / "gpgmnet_x4" / "1" / "model.py", "test_gpgmnet_x4_model")
    model.initialize({
        "model_config": config_json((repository / "gpgmnet_x4" / "config.pbtxt").read_text(), **parameters),
        "model_instance_kind": kind, "model_instance_device_id": "0", "model_name": "gpgmnet_x4",
        "model_repository": str(repository / "gpgmnet_x4"), "model_version": "1",
    })
    return model


def test_torch_network_model_refuses_to_serve_without_weights_unless_told(pb_utils, tmp_path, monkeypatch):
    """An install without weights/ (a wheel) must not serve an untrained network by accident."""
    from gpgmnet import checkpoint

    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path / "no-weights")
    assemble("gpu-torch", (4,), tmp_path, tmp_path)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at .*random weights"):
        torch_network_model(tmp_path, "CPU", precision="fp32")
    model = torch_network_model(tmp_path, "CPU", precision="fp32", random_weights="yes")
    assert model.metadata["source"] == "untrained" and model.metadata["step"] == 0
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at"):
        checkpoint.load_network(None, 2)


def test_torch_network_model_serves_the_residual(pb_utils, tmp_path):
    assemble("gpu-torch", (4,), tmp_path, tmp_path)
    x = torch.from_numpy(processing.network_input_from_i420(random_i420(16, 24, seed=9)))
    network = load_network(None, 4)[0]  # what the model loads: shipped weights, else the seeded untrained net
    network.bicubic_skip = False
    with torch.no_grad():
        expected = network(x)
    for precision, tolerance in (("fp32", 1e-5), ("bf16", 0.05)):
        model = torch_network_model(tmp_path, "CPU", precision=precision)  # a KIND_CPU instance runs on the CPU
        (response,) = model.execute([FakeRequest(FakeTensor(NETWORK_INPUT_NAME, x, on_gpu=True))])
        (residual,) = response.output_tensors
        assert residual.name() == NETWORK_OUTPUT_NAME and residual.tensor().dtype == torch.float32
        assert residual.tensor().is_contiguous() and residual.tensor().shape == (1, 3, 64, 96)
        assert (residual.tensor() - expected).abs().max() <= tolerance
        model.finalize()


def test_torch_network_model_fails_clearly_on_a_gpu_instance_without_cuda(pb_utils, tmp_path):
    if torch.cuda.is_available():  # pragma: no cover - GPU machines
        pytest.skip("CUDA is available here")
    assemble("gpu-torch", (4,), tmp_path, tmp_path)
    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        torch_network_model(tmp_path, "GPU")
    with pytest.raises(ValueError, match="precision"):
        torch_network_model(tmp_path, "CPU", precision="fp8")


# --------------------------------------------------------------------------
# build/gpu_check/


def test_gpu_check_dry_run_writes_the_report(tmp_path):
    report_path = tmp_path / "gpu_check.json"
    completed = subprocess.run(
        [sys.executable, "-m", "build.gpu_check", "--dry-run", "--scale", "4", "--json", str(report_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,  # not the repo: the script finds it itself
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert list(report) == [
        "schema", "ok", "mode", "command", "environment", "frames", "weights", "flops", "peak_tflops",
        "timings", "best", "parity", "postprocess", "onnxruntime", "skipped", "errors", "wall_s",
    ]
    assert report["ok"] and report["mode"] == "quick" and report["errors"] == []
    assert report["frames"]["source"] in ("sample", "synthetic") and report["frames"]["detail"]
    assert report["weights"]["x4"]["source"]
    flops = report["flops"]["x4"]
    assert flops["full_size"] == [540, 960] and 1.3 < flops["tflop_per_frame_full_size"] < 1.5
    assert set(flops["blocks_gflop"]) == {
        "condition_net", "conv_first", "body", "conv_after_body", "upsample", "conv_last"}
    variants = {row["variant"] for row in report["timings"]}
    assert {"fp32", "fp32-cl", "bf16-cl", "fp16-cl-autocast", "bf16-cl-compile"} <= variants
    assert any(row["batch"] > 1 for row in report["timings"])
    for row in report["timings"]:
        assert row["ms_per_frame"] > 0 and row["fps"] > 0 and row["runs"] >= 1
    parity = report["parity"]["x4"]
    assert parity["fp32"]["identical"] and parity["bf16-cl"]["passes_50db"] in (True, False)
    post = report["postprocess"]["x4"]
    assert post["equality"]["pre_bit_exact"] and post["equality"]["within_one_code"]
    assert post["torch"]["post_float64_ms"] > 0 and post["cpu_numpy"]["post_ms"] > 0
    assert report["onnxruntime"]["installed"] and report["onnxruntime"]["cuda_provider"] in (True, False)
    assert {s["what"] for s in report["skipped"]} >= {"x4 bf16-cl-cudagraph", "x4 tf32-cl-cudagraph"}
    assert report["best"]["x4"]["variant"] in variants
    assert "ms/frame" in completed.stdout and "x4" in completed.stdout


def test_gpu_check_without_cuda_exits_2_with_one_line(tmp_path):
    if torch.cuda.is_available():  # pragma: no cover - GPU machines
        pytest.skip("CUDA is available here")
    completed = subprocess.run(
        [sys.executable, "-m", "build.gpu_check", "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: CUDA is not available") and "--dry-run" in lines[0]
    assert not (tmp_path / "r.json").exists()


# --------------------------------------------------------------------------
# real Triton servers (on the CPU)


def loads_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.server
def test_cpu_server_processors_never_load_torch(triton_server):
    """The committed processors (FORCE_CPU_ONLY_INPUT_TENSORS "no") on the suite's CPU server: numpy only."""
    import tritonclient.grpc as grpcclient

    from sritm_core.contract import ensemble_name

    frame = random_i420(16, 16, seed=4)
    request = grpcclient.InferInput(INPUT_NAME, list(frame.shape), "UINT8")
    request.set_data_from_numpy(frame)
    grpcclient.InferenceServerClient(triton_server.grpc_url).infer(ensemble_name(4), [request])
    stubs = triton_server.stub_processes()
    for name in ("sritm_preprocess_0_0", "sritm_postprocess_0_0"):
        assert not loads_torch(stubs[name]), f"{name} loaded torch"


@pytest.mark.server
def test_torch_paths_on_a_real_server(tmp_path):
    """The real pb_utils, behind the unchanged ensemble; the result equals the PyTorch reference.

    DLPack in and out of the Python backend, the torch pre/post path and the gpu-torch network (a KIND_CPU
    instance here).
    """
    import tritonclient.grpc as grpcclient

    from sritm_core.contract import ensemble_name
    from sritm_serving.triton_server import ServerPorts, TritonServer

    repository = tmp_path / "model_repository"
    assemble("gpu-torch", (4,), tmp_path, repository, precision="fp32")
    for name in ("sritm_preprocess", "sritm_postprocess"):
        config = repository / name / "config.pbtxt"
        config.write_text(config.read_text() + 'parameters { key: "torch_device" value: { string_value: "cpu" } }\n')
    config = repository / "gpgmnet_x4" / "config.pbtxt"
    config.write_text(config.read_text().replace("KIND_GPU", "KIND_CPU"))  # no GPU here

    frame = np.ascontiguousarray(random_i420(16, 24, seed=11))
    network = load_network(None, 4)[0]
    network.bicubic_skip = True
    with torch.no_grad():
        expected = processing.i420_from_network_output(
            network(torch.from_numpy(processing.network_input_from_i420(frame))).numpy()
        )
    with TritonServer(repository, ServerPorts.free(), log_path=tmp_path / "triton.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        request = grpcclient.InferInput(INPUT_NAME, list(frame.shape), "UINT8")
        request.set_data_from_numpy(frame)
        served = client.infer(ensemble_name(4), [request]).as_numpy(OUTPUT_NAME)
        stubs = server.stub_processes()
        assert all(loads_torch(stubs[f"{name}_0_0"]) for name in ("sritm_preprocess", "sritm_postprocess"))
    assert served.dtype == np.uint16 and served.shape == expected.shape
    assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("scale, height, width", [(4, 136, 240), (2, 90, 160)])
def test_float32_postprocessing_is_within_one_code_of_float64(scale, height, width):
    """The served float32 post-processing against the colour module's float64 path: ≤ 1 code, almost all equal."""
    network_input = processing.network_input_from_i420(random_i420(height, width, seed=scale))
    residual = np.random.default_rng(scale).normal(0, 0.05, (1, 3, scale * height, scale * width)).astype(np.float32)
    output = (residual + processing.bicubic_upsample(network_input, scale)).astype(np.float64)
    wide = colour.quantize_i420(output[0].transpose(1, 2, 0) * HDR_CODE_SCALE, 10)
    served = processing.postprocess(network_input, residual, scale)
    assert served.dtype == np.uint16 and served.shape == wide.shape
    difference = np.abs(served.astype(int) - wide.astype(int))
    assert difference.max() <= 1 and (difference == 0).mean() > 0.9999
