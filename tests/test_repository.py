"""The served ensembles on a real Triton server against the PyTorch reference pipeline and the contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from sritm_core import colour
from sritm_core.contract import HDR_CODE_SCALE, INPUT_NAME, OUTPUT_NAME, FrameLimits, ensemble_name
from sritm_serving.processing import network_input_from_i420

pytestmark = pytest.mark.server


def structured_i420(height: int, width: int, seed: int) -> np.ndarray:
    """A legal-range 8-bit frame with gradients, edges and noise: content the network reacts to."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    rgb = np.stack([0.5 + 0.5 * np.sin(7 * xx + seed), yy, (xx + yy) % 0.5 * 2], axis=-1)
    rgb[height // 3 : height // 2, width // 4 : width // 2] = [0.95, 0.9, 0.1]
    rgb = np.clip(rgb + rng.normal(0, 0.03, rgb.shape), 0, 1)
    return colour.quantize_i420(colour.rgb_to_codes(rgb, colour.BT709, 8), 8)


def reference_hdr(network: torch.nn.Module, i420: np.ndarray) -> np.ndarray:
    """The PyTorch pipeline: the same pre-processing, the network with its own skip, quantised in float64.

    The server quantises in float32 (``sritm_serving.processing``); the reference
    takes the colour module's float64 path, so the comparison also bounds what float32 costs.
    """
    network.bicubic_skip = True
    with torch.no_grad():
        output = network(torch.from_numpy(network_input_from_i420(i420))).numpy()
    return colour.quantize_i420(output[0].transpose(1, 2, 0).astype(np.float64) * HDR_CODE_SCALE, 10)


def infer(server: object, scale: int, frame: np.ndarray, datatype: str | None = None) -> np.ndarray:
    client = grpcclient.InferenceServerClient(server.grpc_url)  # type: ignore[attr-defined]
    request = grpcclient.InferInput(INPUT_NAME, list(frame.shape), datatype or "UINT8")
    request.set_data_from_numpy(frame)
    return client.infer(ensemble_name(scale), [request]).as_numpy(OUTPUT_NAME)


@pytest.mark.parametrize("scale, height, width", [(4, 16, 16), (4, 38, 62), (4, 64, 112), (2, 30, 44), (2, 72, 128)])
def test_ensemble_matches_pytorch_reference(triton_server, served_networks, scale, height, width):
    frame = structured_i420(height, width, seed=height + width)
    served = infer(triton_server, scale, frame)
    expected = reference_hdr(served_networks[scale], frame)
    assert served.dtype == np.uint16
    assert served.shape == (scale * height * 3 // 2, scale * width)
    difference = np.abs(served.astype(np.int32) - expected.astype(np.int32))
    assert (difference <= 1).mean() >= 0.999, f"{(difference > 1).sum()} samples differ by more than one code"
    assert difference.max() <= 2
    limits = colour.legal_range(10)
    y, u, v = colour.unpack_i420(served)
    assert limits.y_min <= y.min() and y.max() <= limits.y_max
    assert limits.c_min <= min(u.min(), v.min()) and max(u.max(), v.max()) <= limits.c_max


@pytest.mark.parametrize("scale", [2, 4])
def test_metadata_matches_contract(triton_server, scale):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    metadata = client.get_model_metadata(ensemble_name(scale), as_json=True)
    assert metadata["platform"] == "ensemble"
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        (INPUT_NAME, "UINT8", ["-1", "-1"]), ("CONVENTION", "BYTES", ["1"]), ("PEAK_NITS", "FP32", ["1"])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == [
        (OUTPUT_NAME, "UINT16", ["-1", "-1"])]
    assert client.is_model_ready(ensemble_name(scale))


LIMITS = FrameLimits()
MALFORMED = {
    "odd width": (np.zeros((24, 31), np.uint8), None, "even height and width"),
    "rows not 3H/2": (np.zeros((25, 32), np.uint8), None, "not 3H/2"),
    "too small": (np.zeros((12, 8), np.uint8), None, "smaller than the minimum"),
    "too large": (np.zeros((3 * (LIMITS.max_height + 2) // 2, 64), np.uint8), None, "larger than the maximum"),
    "zero rows": (np.zeros((0, 32), np.uint8), None, "empty"),
    "wrong dtype": (np.zeros((24, 32), np.float32), "FP32", "data-type"),
    "wrong rank": (np.zeros((2, 24, 32), np.uint8), None, "shape"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_is_invalid_argument_and_server_keeps_serving(triton_server, served_networks, case):
    frame, datatype, message = MALFORMED[case]
    with pytest.raises(InferenceServerException) as raised:
        infer(triton_server, 4, frame, datatype)
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in raised.value.message()
    good = structured_i420(16, 24, seed=1)
    np.testing.assert_array_equal(infer(triton_server, 4, good), infer(triton_server, 4, good))
    difference = np.abs(infer(triton_server, 4, good).astype(int) - reference_hdr(served_networks[4], good).astype(int))
    assert difference.max() <= 2
