"""Tests for gpgmnet.arch (GPGMNet) and the lazy gpgmnet package export."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("torch")

import torch  # noqa: E402

from gpgmnet import GPGMNet, bicubic_upsample  # noqa: E402
from gpgmnet.arch import PAPER_ABLATIONS, DropBlock2d, GuidedFilter  # noqa: E402

# Table I of the paper.
PAPER_PARAMS = {2: 0.77e6, 4: 0.92e6}
SMALL = (24, 40)
ODD_SIZES = [(1, 1), (1, 7), (5, 3), (17, 31)]
# What the TensorRT ONNX parser is known to take; anything new must be checked.
TENSORRT_OPS = {
    "Add", "AveragePool", "BatchNormalization", "Concat", "Constant", "Conv",
    "DepthToSpace", "Div", "Gemm", "Identity", "InstanceNormalization",
    "LeakyRelu", "Mul", "ReduceMax", "ReduceMean", "Relu", "Sigmoid", "Sub",
    "Unsqueeze",
}  # fmt: skip


def count_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("scale", [2, 4])
def test_param_count_matches_table_i(scale: int) -> None:
    params = count_params(GPGMNet(scale=scale))
    target = PAPER_PARAMS[scale]
    deviation = params / target - 1
    print(f"\nGPGMNet x{scale} params: {params:,} ({deviation:+.2%} vs paper {target / 1e6}M)")
    assert abs(deviation) <= 0.05


@pytest.mark.parametrize("scale", [2, 4])
def test_output_shape(scale: int) -> None:
    net = GPGMNet(scale=scale).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, *SMALL))
    assert out.shape == (2, 3, scale * SMALL[0], scale * SMALL[1])
    assert out.dtype == torch.float32


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("size", ODD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_odd_and_tiny_sizes(scale: int, size: tuple[int, int]) -> None:
    net = GPGMNet(scale=scale).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, scale * size[0], scale * size[1])
    assert torch.isfinite(out).all()


def test_eval_is_deterministic() -> None:
    net = GPGMNet(scale=4).eval()
    x = torch.rand(1, 3, *SMALL)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("scale", [2, 4])
def test_bicubic_skip_off_returns_the_residual(scale: int) -> None:
    net = GPGMNet(scale=scale).eval()
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        full = net(x)
        net.bicubic_skip = False
        residual = net(x)
    torch.testing.assert_close(residual, full - bicubic_upsample(x, scale), rtol=0, atol=1e-5)


@pytest.mark.parametrize("scale", [2, 4])
def test_bicubic_upsample_matches_opencv_inter_cubic(scale: int) -> None:
    """An independent implementation: OpenCV's INTER_CUBIC (Keys a = -0.75, half-pixel centres, replicated border)."""
    import cv2

    x = torch.rand(1, 3, 5, 6, generator=torch.Generator().manual_seed(1))
    planar = np.ascontiguousarray(x[0].permute(1, 2, 0).numpy())
    expected = cv2.resize(planar, (6 * scale, 5 * scale), interpolation=cv2.INTER_CUBIC)
    actual = bicubic_upsample(x, scale)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)


def guided_filter_loop(
    image: npt.NDArray[np.float64], radius: int, eps: float
) -> npt.NDArray[np.float64]:
    """He et al.'s self-guided filter, pixel by pixel; windows clipped to the image."""
    channels, height, width = image.shape

    def window(y: int, x: int) -> tuple[slice, slice]:
        return (
            slice(max(0, y - radius), min(height, y + radius + 1)),
            slice(max(0, x - radius), min(width, x + radius + 1)),
        )

    out = np.empty_like(image)
    for c in range(channels):
        guide = image[c]
        a = np.empty((height, width))
        b = np.empty((height, width))
        for y in range(height):
            for x in range(width):
                patch = guide[window(y, x)]
                a[y, x] = patch.var() / (patch.var() + eps)
                b[y, x] = (1.0 - a[y, x]) * patch.mean()
        for y in range(height):
            for x in range(width):
                out[c, y, x] = a[window(y, x)].mean() * guide[y, x] + b[window(y, x)].mean()
    return out


@pytest.mark.parametrize("eps", [0.01, 1e-4])
@pytest.mark.parametrize("size", [(9, 11), (3, 2), (1, 6)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_guided_filter_matches_per_pixel_loop(eps: float, size: tuple[int, int]) -> None:
    image = torch.rand(1, 3, *size, dtype=torch.float64)
    # Sharp edges make the edge-preserving (a ~ 1) regime matter, not just the blur.
    image[..., : size[0] // 2, :] += 1.0
    filtered = GuidedFilter(radius=2, eps=eps)(image)
    expected = guided_filter_loop(image[0].numpy(), radius=2, eps=eps)
    np.testing.assert_allclose(filtered[0].numpy(), expected, rtol=0, atol=1e-10)


def test_dropblock_identity_in_eval_and_drops_blocks_in_train() -> None:
    dropblock = DropBlock2d(drop_prob=0.1, block_size=3)
    x = torch.ones(4, 8, 32, 32)
    assert dropblock.eval()(x) is x
    out = dropblock.train()(x)
    dropped = (out == 0).float().mean().item()
    assert 0.05 < dropped < 0.15
    assert out.mean().item() == pytest.approx(1.0, rel=1e-4)


def _variant_ids() -> list[str]:
    return list(PAPER_ABLATIONS)


@pytest.mark.parametrize("variant", _variant_ids())
def test_ablation_variants_build_and_run(variant: str) -> None:
    for scale in (2, 4):
        net = GPGMNet(scale=scale, **PAPER_ABLATIONS[variant]).eval()  # type: ignore[arg-type]
        with torch.no_grad():
            out = net(torch.rand(1, 3, 5, 7))
        assert out.shape == (1, 3, 5 * scale, 7 * scale)
        switches = dict(PAPER_ABLATIONS[variant])
        print(f"\nGPGMNet x{scale} {variant} {switches} params: {count_params(net):,}", end="")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"modulation": "film"},
        {"spatial": "cbam", "modulation": "gfm"},
        {"modulation": "sft", "priors": "ccp"},
        {"modulation": "sft", "guided_filter": False},
        {"priors": "ssp", "guided_filter": False},
        {"scale": 3},
    ],
)
def test_rejects_ineffective_or_unknown_switches(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        GPGMNet(**kwargs)  # type: ignore[arg-type]


UNIQUE_VARIANTS = {
    "paper": {},
    "gfm": {"modulation": "gfm"},
    "sft": {"modulation": "sft"},
    "cbam": {"spatial": "cbam"},
    "ccp-only-no-gf": {"priors": "ccp", "guided_filter": False},
    "ssp-only": {"priors": "ssp"},
}


@pytest.mark.parametrize(
    ("scale", "variant"),
    [(2, "paper"), (4, "paper"), *((2, v) for v in UNIQUE_VARIANTS if v != "paper")],
)
def test_gradients_reach_every_parameter(scale: int, variant: str) -> None:
    net = GPGMNet(scale=scale, **UNIQUE_VARIANTS[variant]).train()  # type: ignore[arg-type]
    x = torch.rand(2, 3, *SMALL)
    target = torch.rand(2, 3, scale * SMALL[0], scale * SMALL[1])
    torch.nn.functional.mse_loss(net(x), target).backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().max() > 0, name


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.parametrize("scale", [2, 4])
def test_onnx_export_matches_torch(scale: int, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    net = GPGMNet(scale=scale).eval()
    net.bicubic_skip = False
    path = tmp_path / f"gpgmnet_x{scale}.onnx"
    # The TorchScript exporter: the dynamo one needs an onnxscript matching
    # torch 2.13, and onnxscript 0.5.6 is not (no torch_2_11 API module).
    torch.onnx.export(
        net,
        (torch.rand(1, 3, *SMALL),),
        str(path),
        input_names=["lr_sdr"],
        output_names=["residual"],
        opset_version=17,
        dynamic_axes={"lr_sdr": {0: "n", 2: "h", 3: "w"}, "residual": {0: "n", 2: "sh", 3: "sw"}},
        dynamo=False,
    )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {node.op_type for node in model.graph.node} <= TENSORRT_OPS
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for size in [SMALL, (17, 5), (1, 1), (33, 31)]:
        x = torch.rand(2, 3, *size)
        with torch.no_grad():
            expected = net(x).numpy()
        (actual,) = session.run(None, {"lr_sdr": x.numpy()})
        assert actual.shape == expected.shape
        worst = max(worst, float(np.abs(actual - expected).max()))
    print(f"\nONNX x{scale} (TorchScript exporter, opset 17) max abs diff: {worst:.2e}", end="")
    assert worst <= 1e-4


def test_core_and_the_cpu_serving_helpers_import_without_torch() -> None:
    """What the client and the CPU server load never pulls torch in.

    Import-linter checks the static graph; this checks what actually gets imported.
    """
    code = textwrap.dedent(
        """
        import sys
        import sritm_core.colour, sritm_core.contract
        import sritm_serving.processing, sritm_serving.runtimes, sritm_serving.triton_util
        assert "torch" not in sys.modules, "the core or the CPU serving helpers pulled in torch"
        import gpgmnet
        assert "torch" in sys.modules and gpgmnet.GPGMNet is sys.modules["gpgmnet.arch"].GPGMNet
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------
# conditioning on the SDR convention (gpgmnet.gradings)

K_CONVENTIONS = 7  # len(sritm_core.contract.CONVENTIONS)


def narrow(scale: int, **kwargs: object) -> GPGMNet:
    """A 16-wide, 2-module GPGMNet: the conditioning logic does not depend on the width, and this is fast."""
    return GPGMNet(scale=scale, num_features=16, num_modules=2, **kwargs)  # type: ignore[arg-type]


def modulation_linears(net: torch.nn.Module) -> list[torch.nn.Linear]:
    """Every GSMB/GFM scale and shift mapping of V_g'."""
    return [m for name, m in net.named_modules()
            if isinstance(m, torch.nn.Linear) and name.endswith(("scale_mapping", "shift_mapping"))]


def one_hot(indices: list[int], k: int = K_CONVENTIONS) -> torch.Tensor:
    out = torch.zeros(len(indices), k)
    out[torch.arange(len(indices)), torch.tensor(indices)] = 1.0
    return out


@pytest.mark.parametrize(("scale", "paper_count"), [(2, 777_559), (4, 925_271)])
def test_conditioning_adds_exactly_the_new_linear_columns(scale: int, paper_count: int) -> None:
    assert count_params(GPGMNet(scale=scale)) == paper_count
    assert count_params(GPGMNet(scale=scale, conventions=0)) == paper_count
    channels, modules = 64, 5
    # Each JMRM has two Linear maps of V_g' (scale and shift), each gaining K input columns of C rows.
    expected = paper_count + 2 * modules * channels * K_CONVENTIONS
    assert count_params(GPGMNet(scale=scale, conventions=K_CONVENTIONS)) == expected
    assert expected - paper_count == 4_480
    small = GPGMNet(scale=scale, num_features=16, num_modules=2, conventions=3)
    assert count_params(small) - count_params(GPGMNet(scale=scale, num_features=16, num_modules=2)) == 2 * 2 * 16 * 3


@pytest.mark.parametrize("modulation", ["gsmb", "gfm"])
def test_conditioned_network_output_and_default_convention(modulation: str) -> None:
    net = narrow(2, modulation=modulation, conventions=K_CONVENTIONS).eval()
    x = torch.rand(3, 3, *SMALL)
    with torch.no_grad():
        implicit = net(x)
        explicit = net(x, one_hot([0, 0, 0]))  # index 0 is bt2446a, the default
    assert implicit.shape == (3, 3, 2 * SMALL[0], 2 * SMALL[1]) and torch.isfinite(implicit).all()
    assert torch.equal(implicit, explicit)


def test_conventions_change_the_output_only_through_the_new_columns() -> None:
    net = narrow(4, conventions=K_CONVENTIONS).eval()
    x = torch.rand(1, 3, 12, 16).repeat(K_CONVENTIONS, 1, 1, 1)  # one image, every convention
    with torch.no_grad():
        outputs = net(x, torch.eye(K_CONVENTIONS))
    for i in range(1, K_CONVENTIONS):
        assert (outputs[i] - outputs[0]).abs().max() > 1e-4, i
    # The batch items do not mix: item i equals the same image run alone with convention i.
    with torch.no_grad():
        alone = net(x[:1], one_hot([3]))
    torch.testing.assert_close(outputs[3:4], alone, rtol=0, atol=1e-5)
    # With the convention columns zeroed, the convention cannot matter any more.
    with torch.no_grad():
        linears = modulation_linears(net)
        assert len(linears) == 2 * 2
        for linear in linears:
            linear.weight[:, -K_CONVENTIONS:] = 0.0
        zeroed = net(x, torch.eye(K_CONVENTIONS))
    for i in range(1, K_CONVENTIONS):
        torch.testing.assert_close(zeroed[i], zeroed[0], rtol=0, atol=1e-6)


def test_conventions_reach_the_gradients() -> None:
    net = narrow(2, conventions=K_CONVENTIONS).train()
    x = torch.rand(2, 3, 10, 12)
    torch.nn.functional.mse_loss(net(x, one_hot([1, 6])), torch.rand(2, 3, 20, 24)).backward()
    grad = modulation_linears(net)[0].weight.grad
    assert grad is not None
    new_columns = grad[:, -K_CONVENTIONS:]
    assert new_columns[:, 1].abs().max() > 0 and new_columns[:, 6].abs().max() > 0
    assert torch.equal(new_columns[:, [0, 2, 3, 4, 5]], torch.zeros(16, 5))  # conventions not in the batch


@pytest.mark.parametrize("shape", [(2, 6), (1, 7), (2, 7, 1), (7,)])
def test_convention_of_the_wrong_shape_is_refused(shape: tuple[int, ...]) -> None:
    net = narrow(2, conventions=K_CONVENTIONS).eval()
    with pytest.raises(ValueError, match="convention must be N x 7"):
        net(torch.rand(2, 3, 4, 4), torch.zeros(shape))


def test_conventions_need_a_prior_vector() -> None:
    with pytest.raises(ValueError, match="sft"):
        GPGMNet(modulation="sft", conventions=K_CONVENTIONS)
    with pytest.raises(ValueError, match=">= 0"):
        GPGMNet(conventions=-1)
    plain = narrow(2).eval()
    assert plain.conventions == 0
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(plain(x), plain(x, None))


def test_flop_count_matches_the_recorded_figure_for_the_papers_x4_size():
    """1.404 TFLOP for x4 from 540x960 (the figure the project plans with); x2 from 1080x1920 costs more."""
    from gpgmnet.flops import count_flops

    x4 = count_flops(GPGMNet(scale=4), (540, 960))
    assert x4["total"] / 1e12 == pytest.approx(1.404, rel=5e-3)
    assert sum(x4["blocks"].values()) == x4["total"]
    assert count_flops(GPGMNet(scale=2), (1080, 1920))["total"] > x4["total"]


def test_classical_skip_is_the_bicubic_of_the_baseline_conversion_for_its_conventions() -> None:
    from gpgmnet.baseline import bicubic_baseline
    from sritm_serving.processing import skip_input

    net = narrow(2, conventions=K_CONVENTIONS, classical_skip=(1,)).eval()
    # A flat frame: bicubic and the per-pixel conversion commute, so the skip must equal the baseline exactly.
    flat = torch.tensor([120.0, 110.0, 150.0]).div(255.0).view(1, 3, 1, 1).expand(2, 3, *SMALL).contiguous()
    classical = torch.from_numpy(skip_input(flat.numpy(), classical=True))
    with torch.no_grad():
        full = net(flat, one_hot([1, 0]), classical)
        net.bicubic_skip = False
        residual = net(flat, one_hot([1, 0]), classical)
    skips = (full - residual).numpy()
    baseline = bicubic_baseline(flat[:1].numpy(), 2)
    np.testing.assert_allclose(skips[0], baseline[0], atol=1e-5)
    np.testing.assert_allclose(skips[1], bicubic_upsample(flat[1:], 2)[0].numpy(), atol=1e-6)  # bt2446a: Bic(I_L)
    assert np.abs(baseline[0] - skips[1]).max() > 0.05  # the two skips are far apart: the test can tell them apart


def test_classical_skip_needs_the_conversion_and_known_conventions() -> None:
    net = narrow(2, conventions=K_CONVENTIONS, classical_skip=(1,)).eval()
    x = torch.rand(1, 3, *SMALL)
    with torch.no_grad():
        net(x, one_hot([0]))  # bt2446a keeps Bic(I_L): no conversion needed
        with pytest.raises(ValueError, match="needs the classical conversion"):
            net(x, one_hot([1]))
    with pytest.raises(ValueError, match="outside 0..6"):
        GPGMNet(scale=2, conventions=K_CONVENTIONS, classical_skip=(7,))
    assert count_params(GPGMNet(scale=4, conventions=K_CONVENTIONS, classical_skip=(1,))) == 925_271 + 4_480
