"""The build scripts: ONNX export and its checks, the TensorRT engine step as far as a CPU allows, assembly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from build.assemble_repository import CPU_MODEL_PY, assemble, network_config
from build.build_engine import EngineBuildError, ShapeProfile, build_engine, parse_size, trtexec_command
from build.export_onnx import (
    OPSET,
    export_and_verify,
    unsupported_by_tensorrt,
)
from sritm_core.contract import (
    CONVENTIONS,
    NETWORK_CONDITION_NAME,
    NETWORK_INPUT_NAME,
    NETWORK_OUTPUT_NAME,
    FrameLimits,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def exported_x4(tmp_path_factory: pytest.TempPathFactory):
    return export_and_verify(4, None, tmp_path_factory.mktemp("onnx"))


def test_export_is_checked_dynamic_and_matches_pytorch(exported_x4):
    model = onnx.load(exported_x4.path)
    onnx.checker.check_model(model, full_check=True)
    assert exported_x4.opset >= 17
    assert max(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")) == OPSET
    graph_input, condition_input = model.graph.input
    (graph_output,) = model.graph.output
    assert (graph_input.name, graph_output.name) == (NETWORK_INPUT_NAME, NETWORK_OUTPUT_NAME)
    assert condition_input.name == NETWORK_CONDITION_NAME
    assert [d.dim_value for d in condition_input.type.tensor_type.shape.dim] == [1, len(CONVENTIONS)]
    input_dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert input_dims[:2] == [1, 3] and all(isinstance(d, str) for d in input_dims[2:])
    # ONNX Runtime vs PyTorch and TensorRT's operators are checked by export_and_verify itself (it raises);
    # test_export_has_no_bicubic_skip and test_cpu_runtimes_agree check the graph's numbers independently.
    assert Path(exported_x4.path).with_suffix(".json").is_file()


def test_export_without_weights_stops_unless_random_weights_are_asked_for(tmp_path, monkeypatch, capsys):
    from build import export_onnx
    from gpgmnet import checkpoint

    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path / "no-weights")
    assert export_onnx.main(["--scale", "2", "--output-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: no checkpoint at") and "\n" not in error
    assert not (tmp_path / "gpgmnet_x2.onnx").exists()
    assert export_onnx.main(["--scale", "2", "--output-dir", str(tmp_path), "--random-weights"]) == 0
    assert (tmp_path / "gpgmnet_x2.onnx").is_file()


def test_operator_check_catches_an_unsupported_operator():
    node = onnx.helper.make_node("NonZero", ["x"], ["y"])
    graph = onnx.helper.make_graph(
        [node], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT64, [1, None])],
    )
    assert unsupported_by_tensorrt(onnx.helper.make_model(graph)) == ["NonZero"]


def test_export_has_no_bicubic_skip(exported_x4, served_networks):
    """The graph's output is the residual: the full network output minus Bic(I_L)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from gpgmnet import bicubic_upsample

    network = served_networks[4]
    x = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(3))
    network.bicubic_skip = True
    with torch.no_grad():
        full = network(x)
        residual = (full - bicubic_upsample(x, 4)).numpy()
    session = ort.InferenceSession(exported_x4.path, providers=["CPUExecutionProvider"])
    bt2446a = np.eye(len(CONVENTIONS), dtype=np.float32)[:1]
    (served,) = session.run(None, {NETWORK_INPUT_NAME: x.numpy(), NETWORK_CONDITION_NAME: bt2446a})
    assert np.abs(served - residual).max() < 1e-4


def test_profile_defaults_follow_the_contract():
    limits = FrameLimits()
    x4, x2 = ShapeProfile.default(4), ShapeProfile.default(2)
    assert x4.opt == (540, 960) and x2.opt == (1080, 1920)
    assert x4.max == x2.max == (limits.max_height, limits.max_width)
    assert x4.tensor_shapes()[1] == (1, 3, 540, 960)


def test_profile_rejects_unordered_sizes():
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile(min=(16, 16), opt=(2000, 960), max=(1088, 1920))
    with pytest.raises(ValueError, match="positive"):
        ShapeProfile(min=(0, 16), opt=(540, 960), max=(1088, 1920))


def test_parse_size():
    assert parse_size("540x960") == (540, 960)
    with pytest.raises(Exception, match="HEIGHTxWIDTH"):
        parse_size("540")


def test_trtexec_command_mirrors_the_build():
    command = trtexec_command(Path("m.onnx"), Path("m.plan"), ShapeProfile.default(4), Path("t.cache"))
    assert command.startswith("trtexec --onnx=m.onnx --saveEngine=m.plan --fp16")
    assert f"--minShapes={NETWORK_INPUT_NAME}:1x3x16x16" in command
    assert f"--optShapes={NETWORK_INPUT_NAME}:1x3x540x960" in command
    assert f"--maxShapes={NETWORK_INPUT_NAME}:1x3x1088x1920" in command
    assert "--timingCacheFile=t.cache" in command


def test_engine_build_fails_clearly_without_tensorrt_or_gpu(exported_x4, tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        expected = "TensorRT is not installed"
    else:  # pragma: no cover - only on GPU machines with TensorRT
        pytest.skip("TensorRT is installed here; the failure path is for machines without it")
    with pytest.raises(EngineBuildError, match=expected):
        build_engine(Path(exported_x4.path), tmp_path / "x.plan", ShapeProfile.default(4), tmp_path / "cache")
    script = subprocess.run(
        [sys.executable, "-m", "build.build_engine", "--scale", "4", "--onnx", exported_x4.path,
         "--plan", str(tmp_path / "x.plan")],
        capture_output=True, text=True,
    )
    assert script.returncode == 2
    assert "trtexec --onnx=" in script.stdout
    error_lines = script.stderr.strip().splitlines()
    assert len(error_lines) == 1 and error_lines[0].startswith("error: TensorRT is not installed")


def parsed(config: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(config, model_config_pb2.ModelConfig())


def tensor_section(config: str) -> tuple[object, ...]:
    """The batch size, inputs and outputs of a config, as protobuf reads them."""
    model = parsed(config)
    return model.max_batch_size, list(model.input), list(model.output)


def test_targets_differ_only_in_how_the_network_runs():
    cpu, gpu = network_config(4, "cpu"), network_config(4, "gpu")
    assert tensor_section(cpu) == tensor_section(gpu)
    cpu_model, gpu_model = parsed(cpu), parsed(gpu)
    assert (cpu_model.backend, cpu_model.platform) == ("python", "")
    assert [g.kind for g in cpu_model.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert (gpu_model.backend, gpu_model.platform) == ("", "tensorrt_plan")
    assert [g.kind for g in gpu_model.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    with pytest.raises(ValueError, match="target"):
        network_config(4, "tpu")


def test_assemble_cpu_writes_the_whole_repository(exported_x4, tmp_path):
    written = assemble("cpu", (4,), Path(exported_x4.path).parent, tmp_path)
    assert written == [tmp_path / "gpgmnet_x4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gpgmnet_x4", "sritm_postprocess", "sritm_preprocess", "sritm_x4"]
    assert sorted(p.name for p in (tmp_path / "gpgmnet_x4" / "1").iterdir()) == ["model.onnx", "model.py"]
    assert (tmp_path / "gpgmnet_x4" / "1" / "model.py").read_text() == CPU_MODEL_PY
    for name in ("sritm_preprocess", "sritm_postprocess", "gpgmnet_x4"):
        shim = (tmp_path / name / "1" / "model.py").read_text()
        assert len(shim.splitlines()) == 2 and "from sritm_serving." in shim, name
    configs = {p.parent.name: text_format.Parse(p.read_text(), model_config_pb2.ModelConfig())
               for p in tmp_path.glob("*/config.pbtxt")}
    assert {name: config.name for name, config in configs.items()} == {name: name for name in configs}
    steps = [step.model_name for step in configs["sritm_x4"].ensemble_scheduling.step]
    assert steps == ["sritm_preprocess", "gpgmnet_x4", "sritm_postprocess"]


def test_assemble_gpu_needs_an_engine(exported_x4, tmp_path):
    with pytest.raises(FileNotFoundError, match="build_engine.py"):
        assemble("gpu", (4,), Path(exported_x4.path).parent, tmp_path)


def test_the_generated_repository_is_ignored_but_its_readme_is_not():
    generated = ["model_repository/gpgmnet_x4/1/model.onnx", "model_repository/sritm_x4/config.pbtxt",
                 "model_repository/sritm_preprocess/1/model.py", "build/artifacts/gpgmnet_x4.onnx"]
    ignored = subprocess.run(["git", "check-ignore", *generated], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == generated
    assert subprocess.run(["git", "check-ignore", "model_repository/README.md"], cwd=ROOT).returncode == 1


def test_cpu_runtimes_agree_and_openvino_is_the_default(exported_x4):
    """The CPU repository runs the graph in OpenVINO (f32) by default; ONNX Runtime is the alternative."""
    import numpy as np

    from sritm_serving.runtimes import make_network_runner

    x = np.random.default_rng(0).random((1, 3, 20, 28), dtype=np.float32)
    condition = np.eye(len(CONVENTIONS), dtype=np.float32)[1:2]
    openvino = make_network_runner(Path(exported_x4.path), "openvino")(x, condition)
    onnxruntime = make_network_runner(Path(exported_x4.path), "onnxruntime")(x, condition)
    assert openvino.shape == onnxruntime.shape == (1, 3, 80, 112)
    assert np.abs(openvino - onnxruntime).max() < 1e-4
    assert parsed(network_config(4, "cpu")).parameters["runtime"].string_value == "openvino"
    assert parsed(network_config(4, "cpu", runtime="onnxruntime")).parameters["runtime"].string_value == "onnxruntime"
    with pytest.raises(ValueError, match="runtime must be one of"):
        make_network_runner(Path(exported_x4.path), "tvm")
