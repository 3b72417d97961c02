"""The CPU network's precision: chosen by the hardware, served only behind the quality gate, f32 on failure."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from build import precision_gate, quantize_int8
from build.assemble_repository import assemble
from sritm_serving.runtimes import cpu_runs_int8_natively, resolve_cpu_precision
from sritm_serving.triton_server import ServerPorts, TritonServer


def cpuinfo_has_bf16() -> bool:
    """The independent view of the hardware: the kernel's CPU flags."""
    flags = Path("/proc/cpuinfo").read_text()
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.fixture(scope="module")
def artifacts(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's exported networks, as build artifacts."""
    folder = tmp_path_factory.mktemp("artifacts")
    for scale in (2, 4):
        shutil.copyfile(model_repository / f"gpgmnet_x{scale}" / "1" / "model.onnx", folder / f"gpgmnet_x{scale}.onnx")
    return folder


def parameters(model_dir: Path) -> dict[str, str]:
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return {key: value.string_value for key, value in config.parameters.items()}


def cpuinfo_has_int8_dot_products() -> bool:
    flags = Path("/proc/cpuinfo").read_text().split()
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


SCENES = precision_gate.SCENES_DIR
needs_scenes = pytest.mark.skipif(not SCENES.is_dir(), reason="needs the HDR masters (../shared)")


def test_auto_follows_the_hardware_and_explicit_choices_stay():
    assert resolve_cpu_precision("auto") == ("bf16" if cpuinfo_has_bf16() else "f32")
    assert resolve_cpu_precision("f32") == "f32" and resolve_cpu_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="CPU precision must be one of"):
        resolve_cpu_precision("fp8")
    if cpuinfo_has_int8_dot_products():
        assert cpu_runs_int8_natively()


@needs_scenes
def test_auto_keeps_int8_only_when_it_passes_the_gate_and_the_validation_bar(artifacts, tmp_path, monkeypatch):
    """The same quantised graph, judged twice: by the real bars, then by bars it meets."""
    if not cpu_runs_int8_natively():
        pytest.skip("this CPU has no int8 arithmetic: auto never tries int8")
    monkeypatch.setattr(quantize_int8, "CALIBRATION_SCENES", 3)
    onnx, int8 = artifacts / "gpgmnet_x4.onnx", tmp_path / "int8.xml"
    frames = precision_gate.gate_frames(4)
    strict = precision_gate.choose_precision(onnx, 4, "auto", frames, int8)
    assert int8.is_file() and int8.with_suffix(".bin").is_file()
    assert strict.served == resolve_cpu_precision("auto") and len(strict.considered) == 1
    assert strict.considered[0].startswith("x4 int8 vs f32 on 6 frames")
    int8_figures = precision_gate.run_gate(onnx, 4, "int8", frames, int8)
    assert 40 < int8_figures.psnr_db < 70 and int8_figures.max_code_difference > 0
    monkeypatch.setattr(precision_gate, "GATE_PSNR_DB", int8_figures.psnr_db - 1)
    monkeypatch.setattr(precision_gate, "GATE_MAX_CODES", int8_figures.max_code_difference)
    monkeypatch.setattr(precision_gate, "VALIDATION_LOSS_DB", 0.0)
    refused = precision_gate.choose_precision(onnx, 4, "auto", frames, int8)
    assert refused.served != "int8" and "validation bar" in refused.considered[0]
    monkeypatch.setattr(precision_gate, "VALIDATION_LOSS_DB", 5.0)
    lenient = precision_gate.choose_precision(onnx, 4, "auto", frames, int8)
    assert lenient.served == "int8" and lenient.passed and 0 < lenient.validation_loss_db <= 5.0


def test_psnr_of_the_gate_is_the_usual_10_bit_psnr():
    reference = np.full((6, 4), 500, np.uint16)
    test = reference.copy()
    test[0, 0] += 4  # MSE 16/24
    assert precision_gate.psnr_10bit(reference, test) == pytest.approx(10 * math.log10(1023**2 / (16 / 24)))
    assert precision_gate.psnr_10bit(reference, reference) == math.inf


def test_the_gate_compares_real_frames_and_bf16_passes_where_it_is_native(artifacts):
    frames = precision_gate.gate_frames(4, scenes_dir=None)
    assert len(frames) >= 4 and all(i420.dtype == np.uint8 for _, i420 in frames)
    if not cpuinfo_has_bf16():
        pytest.skip("this CPU has no native bf16; auto serves f32 here")
    result = precision_gate.run_gate(artifacts / "gpgmnet_x4.onnx", 4, resolve_cpu_precision("auto"), frames)
    assert result.precision == "bf16" and result.passed and result.served == "bf16"
    assert result.psnr_db >= precision_gate.GATE_PSNR_DB
    assert 0 < result.max_code_difference <= precision_gate.GATE_MAX_CODES


def test_a_failed_gate_serves_f32_with_a_one_line_warning(artifacts, tmp_path, monkeypatch, capsys):
    if not cpuinfo_has_bf16():
        pytest.skip("this CPU has no native bf16: auto never reaches the gate")
    monkeypatch.setattr(precision_gate, "GATE_PSNR_DB", 1000.0)  # a bar no reduced precision meets
    monkeypatch.setattr(quantize_int8, "CALIBRATION_SCENES", 3)
    assemble("cpu", (4,), artifacts, tmp_path, cpu_precision="auto")
    warning = capsys.readouterr().err.strip()  # auto's int8 attempt, where there is one, is a line on stdout
    assert warning.startswith("warning: precision gate x4 bf16 vs f32") and "serving f32" in warning
    assert "\n" not in warning
    assert parameters(tmp_path / "gpgmnet_x4")["precision"] == "f32"
    kept = json.loads((tmp_path / "gpgmnet_x4" / precision_gate.GATE_FILE).read_text())
    assert kept["passed"] is False and kept["served"] == "f32" and kept["psnr_db"] > 40


@pytest.mark.server
@pytest.mark.parametrize("requested", ["auto", "int8"])
def test_the_repository_serves_its_choice_close_to_f32(artifacts, triton_server, tmp_path, requested, monkeypatch):
    """Assembled with auto or int8, served by a real Triton: the model logs its precision and answers close to f32.

    auto's choice is within the gate's bar; int8, an explicit opt-in, is served with its figures kept beside it.
    """
    monkeypatch.setattr(quantize_int8, "CALIBRATION_SCENES", 3)
    repository = tmp_path / "repository"
    assemble("cpu", (4,), artifacts, repository, cpu_precision=requested)
    chosen = parameters(repository / "gpgmnet_x4")["precision"]
    assert chosen == (resolve_cpu_precision("auto") if requested == "auto" else "int8")
    if chosen != "f32":
        kept = json.loads((repository / "gpgmnet_x4" / precision_gate.GATE_FILE).read_text())
        assert kept["served"] == chosen and kept["passed"] == (requested == "auto")
    if chosen == "int8":
        assert (repository / "gpgmnet_x4" / "1" / quantize_int8.INT8_FILE).is_file()
        assert parameters(repository / "gpgmnet_x4")["int8_file"] == quantize_int8.INT8_FILE
    frame = precision_gate.gate_frames(4, scenes_dir=None)[0][1]

    def served(url: str) -> np.ndarray:
        tensor = grpcclient.InferInput("SDR_I420", list(frame.shape), "UINT8")
        tensor.set_data_from_numpy(frame)
        with grpcclient.InferenceServerClient(url) as client:
            return client.infer("sritm_x4", [tensor]).as_numpy("HDR_I420").astype(np.int32)

    with TritonServer(repository, ServerPorts.free(), log_path=tmp_path / "triton.log") as server:
        answer = served(server.grpc_url)
        log = server.log_text()
    assert f"gpgmnet_x4: openvino, precision {chosen}" in log
    reference = served(triton_server.grpc_url)
    if chosen == "int8":
        assert precision_gate.psnr_10bit(reference, answer) >= 40
    else:
        assert np.abs(answer - reference).max() <= precision_gate.GATE_MAX_CODES
