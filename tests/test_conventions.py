"""The user-chosen SDR convention and target display peak, end to end on the real server."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from test_repository import structured_i420
from tritonclient.utils import InferenceServerException

from sritm_client import SdrFrame, SritmClient
from sritm_client.errors import InvalidFrameError
from sritm_client.video import P3D65_1000_NITS, mastering_display_for
from sritm_core import colour
from sritm_core.contract import (
    CONVENTIONS,
    INPUT_NAME,
    OUTPUT_NAME,
    PEAK_NITS_RANGE,
    Rendering,
    RenderingError,
    ensemble_name,
)
from sritm_serving.processing import display_peak_codes, i420_from_network_output, network_input_from_i420


def reference_hdr(network: torch.nn.Module, i420: np.ndarray, convention: str, peak: float) -> np.ndarray:
    """PyTorch with the convention's one-hot (a paper-form network has none), then the served quantisation."""
    from gpgmnet.train import classical_input

    network.bicubic_skip = True
    x = torch.from_numpy(network_input_from_i420(i420))
    with torch.no_grad():
        if network.conventions:
            one_hot = torch.zeros(1, network.conventions)
            one_hot[0, CONVENTIONS.index(convention)] = 1
            output = network(x, one_hot, classical_input(network, x)).numpy()
        else:
            output = network(x).numpy()
    return i420_from_network_output(output, peak)


def infer(server: object, scale: int, frame: np.ndarray, convention: object = None, peak: object = None,
          peak_dtype: str = "FP32") -> np.ndarray:
    client = grpcclient.InferenceServerClient(server.grpc_url)  # type: ignore[attr-defined]
    inputs = [grpcclient.InferInput(INPUT_NAME, list(frame.shape), "UINT8")]
    inputs[0].set_data_from_numpy(frame)
    if convention is not None:
        tensor = grpcclient.InferInput("CONVENTION", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([convention], dtype=np.object_))
        inputs.append(tensor)
    if peak is not None:
        tensor = grpcclient.InferInput("PEAK_NITS", [1], peak_dtype)
        tensor.set_data_from_numpy(np.array([peak], dtype=np.float32 if peak_dtype == "FP32" else np.float64))
        inputs.append(tensor)
    return client.infer(ensemble_name(scale), inputs).as_numpy(OUTPUT_NAME)


@pytest.mark.parametrize("convention, peak", [("bt2408", 1000.0), ("bt2446a", 600.0), ("hable", 400.0)])
def test_served_convention_and_peak_match_pytorch(triton_server, served_networks, convention, peak):
    frame = structured_i420(40, 56, seed=3)
    served = infer(triton_server, 4, frame, convention.encode(), peak)
    expected = reference_hdr(served_networks[4], frame, convention, peak)
    difference = np.abs(served.astype(np.int32) - expected.astype(np.int32))
    assert (difference <= 1).mean() >= 0.999 and difference.max() <= 2


def test_absent_inputs_mean_bt2446a_at_1000_nits(triton_server):
    frame = structured_i420(32, 48, seed=4)
    plain = infer(triton_server, 2, frame)
    assert np.array_equal(plain, infer(triton_server, 2, frame, b"bt2446a", 1000.0))


def test_lower_peak_compresses_highlights_and_keeps_dark_tones(triton_server):
    frame = structured_i420(40, 56, seed=5)
    full = colour.unpack_i420(infer(triton_server, 4, frame))[0].astype(int)
    dim = colour.unpack_i420(infer(triton_server, 4, frame, peak=400.0))[0].astype(int)
    assert dim.max() < full.max()
    dark = full < 400  # luma code 400 is about 40 cd/m^2, far below the EETF's knee...
    # ...though a saturated pixel's brightest R'G'B' channel can still sit above it (the EETF acts per channel)
    assert np.percentile(np.abs(dim[dark] - full[dark]), 90) <= 1


@pytest.mark.parametrize("convention, peak, message", [
    (b"bt2446b", None, "allowed: bt2446a, bt2408"),
    (b"\xff\xfe", None, "UTF-8"),
    (None, 100.0, "between 400 and 4000"),
    (None, float("nan"), "between 400 and 4000"),
])
def test_bad_convention_or_peak_is_invalid_argument_and_server_keeps_serving(triton_server, convention, peak, message):
    frame = structured_i420(16, 16, seed=6)
    with pytest.raises(InferenceServerException) as caught:
        infer(triton_server, 4, frame, convention, peak)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in caught.value.message()
    assert infer(triton_server, 4, frame).shape == (96, 64)


def test_peak_of_the_wrong_type_is_refused(triton_server):
    with pytest.raises(InferenceServerException) as caught:
        infer(triton_server, 4, structured_i420(16, 16, seed=7), peak=600.0, peak_dtype="FP64")
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_sdk_convert_and_stream_take_convention_and_peak(triton_server, served_networks):
    frame = structured_i420(32, 48, seed=8)
    expected = reference_hdr(served_networks[4], frame, "bt2408", 800.0)
    with SritmClient(triton_server.grpc_url, scale=4) as client:
        single = client.convert(SdrFrame.from_i420(frame), convention="bt2408", peak_nits=800)
        streamed = list(client.stream([SdrFrame.from_i420(frame, pts=i) for i in range(3)], window=2,
                                      convention="bt2408", peak_nits=800))
        with pytest.raises(RenderingError, match="allowed: bt2446a"):
            client.convert(SdrFrame.from_i420(frame), convention="youtube")
        with pytest.raises(ValueError, match="between 400 and 4000"):
            list(client.stream([SdrFrame.from_i420(frame)], peak_nits=5000))
    assert np.abs(single.to_numpy().astype(int) - expected.astype(int)).max() <= 2
    assert all(np.array_equal(s.to_numpy(), single.to_numpy()) for s in streamed)
    assert not issubclass(RenderingError, InvalidFrameError)  # a bad option is the caller's, not the frame's


def test_rendering_validates_in_one_place():
    assert Rendering().is_default and Rendering("bt2446a", 1000.0).is_default
    assert Rendering("bt2408").convention_index == 1
    for low_or_high in PEAK_NITS_RANGE:
        Rendering(peak_nits=low_or_high)
    with pytest.raises(RenderingError, match="bt2446a, bt2408, bt2446c, reinhard, drago, mantiuk, hable"):
        Rendering("BT2408")


def test_display_peak_is_the_bt2390_eetf_on_rgb():
    """1000 cd/m^2 white maps to the target peak; a grey below the knee keeps its light (PQ read by colour-science)."""
    import colour as colour_science

    def codes_of(cd_m2: float) -> np.ndarray:
        pq = colour_science.models.eotf_inverse_ST2084(cd_m2)
        return colour.rgb_to_codes(np.full((1, 1, 3), pq), colour.BT2020, 10)

    def light_of(codes: np.ndarray) -> float:
        return float(colour_science.models.eotf_ST2084(colour.codes_to_rgb(codes, colour.BT2020, 10)[0, 0, 0]))

    assert light_of(display_peak_codes(codes_of(1000.0), 600.0)) == pytest.approx(600.0, rel=0.01)
    assert light_of(display_peak_codes(codes_of(20.0), 600.0)) == pytest.approx(20.0, rel=0.01)
    assert light_of(display_peak_codes(codes_of(500.0), 600.0)) < 500.0
    assert np.array_equal(display_peak_codes(codes_of(900.0), 2000.0), codes_of(900.0))


def test_mastering_metadata_follows_the_peak():
    assert mastering_display_for(1000) == P3D65_1000_NITS == mastering_display_for(4000)
    assert mastering_display_for(600).max_luminance == 6_000_000
    assert mastering_display_for(600).x265().endswith("L(6000000,1)")


@pytest.mark.server
def test_a_network_with_the_classical_skip_is_served_with_it(tmp_path):
    """A conditioned x2 network whose bt2408 skip is the classical conversion: exported, assembled, served."""
    from build.assemble_repository import assemble
    from build.export_onnx import export_and_verify
    from gpgmnet import GPGMNet
    from gpgmnet.checkpoint import save_checkpoint
    from sritm_serving.triton_server import ServerPorts, TritonServer

    torch.manual_seed(11)
    settings = {"scale": 2, "num_features": 16, "num_modules": 2, "conventions": len(CONVENTIONS),
                "classical_skip": [CONVENTIONS.index("bt2408")]}
    network = GPGMNet(**settings).eval()
    checkpoint = tmp_path / "conditioned_x2.pt"
    save_checkpoint(checkpoint, network, settings, step=0)
    report = export_and_verify(2, checkpoint, tmp_path / "artifacts")
    assert report.classical_skip == ["bt2408"]
    repository = tmp_path / "repository"
    assemble("cpu", (2,), tmp_path / "artifacts", repository, cpu_precision="f32")
    assert 'key: "classical_skip_x2"' in (repository / "sritm_postprocess" / "config.pbtxt").read_text()
    frame = structured_i420(24, 32, seed=12)
    with TritonServer(repository, ServerPorts.free(), log_path=tmp_path / "triton.log") as server:
        answers = {name: infer(server, 2, frame, name.encode()) for name in ("bt2408", "bt2446a")}
    for name, served in answers.items():
        expected = reference_hdr(network, frame, name, 1000.0)
        assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1, name
    # Served without the classical skip, bt2408 would be far from what it is.
    network.classical_skip = ()
    plain = reference_hdr(network, frame, "bt2408", 1000.0)
    assert np.abs(answers["bt2408"].astype(int) - plain.astype(int)).mean() > 20


@pytest.mark.parametrize("checkpoint, scale, paper_count", [("gpgmnet_x2.pt", 2, 777_559),
                                                             ("candidates/gpgmnet_x4.pt", 4, 925_271)])
def test_conditioned_checkpoints_have_the_bt2408_classical_skip(checkpoint, scale, paper_count):
    """The shipped x2 network and the x4 candidate: Table I's network, the K convention columns, bt2408's skip."""
    from pathlib import Path

    from gpgmnet.checkpoint import load_network

    path = Path(__file__).resolve().parent.parent / "weights" / checkpoint
    network, metadata = load_network(path, scale)
    assert network.conventions == len(CONVENTIONS)
    assert [CONVENTIONS[index] for index in network.classical_skip] == ["bt2408"]
    assert sum(p.numel() for p in network.parameters()) == paper_count + 4_480  # Table I's network + the K columns
    assert metadata["step"] > 0
