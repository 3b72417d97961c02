"""GPGMNet: Global Priors Guided Modulation Network for joint SR-ITM.

He et al., "Global Priors Guided Modulation Network for Joint Super-Resolution
and Inverse Tone-Mapping" (paper text: ``shared/paper/gpgmnet-paper.md``).
Equation numbers below refer to that paper. No public code of it exists; every
block is written from the paper's text, with the unstated details filled in as
documented in each docstring.

Data convention (this service, not the paper's code):
    input   N x 3 x h x w, YUV 4:4:4, BT.709 8-bit narrow-range codes / 255;
    output  N x 3 x (s*h) x (s*w), YUV BT.2020 PQ 10-bit codes / 1023.
Nothing inside the network clamps; the post-processor quantises.

Unstated widths, chosen to reproduce the paper's parameter counts (Table I:
x2 0.77M, x4 0.92M):
    CCCB widths   16, 32, 64, 128, 128   (AGCM's colour condition network, which
                                          the paper says the CCCBs copy)
    SSCB width    64                     (the trunk width)
    SPCB width    11                     (reducing conv 64 -> 11; each of the
                                          3/5/7/9 branches 11 -> 11)
giving 777,559 parameters at x2 (+0.98 %) and 925,271 at x4 (+0.57 %).
The breakdown: trunk (CF, 5 x (BB + GSMB FCs), CB, CL) 418,051; Up 147,712 per
PixelShuffle stage; GPEM 108,556 (CCP 29,062 + SSP 79,494); SPCB 20,648 each.

Everything here exports to ONNX (opset 17, dynamic batch/height/width; the
TorchScript exporter, ``torch.onnx.export(..., dynamo=False)``) with
TensorRT-supported operators only: Conv, AveragePool (also with
count_include_pad=0), InstanceNormalization, BatchNormalization (after a ReLU,
so not folded into a conv), ReduceMean, ReduceMax, Gemm, DepthToSpace, Concat,
Unsqueeze, Identity (eval-mode dropout), Sigmoid and elementwise ops. Forward
passes branch only on constructor-time structure, never on tensor values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PAPER_ABLATIONS",
    "BaseBlock",
    "ColorConditionBlock",
    "ColorConformityPriorBranch",
    "DropBlock2d",
    "GPGMNet",
    "GlobalFeatureModulation",
    "GlobalPriorsExtractionModule",
    "GlobalPriorsSpatialModulation",
    "GuidedFilter",
    "JointModulatedResidualModule",
    "SFTConditionNet",
    "SpatialAttention",
    "SpatialFeatureTransform",
    "SpatialPyramidConvBlock",
    "StructuralSimilarityConditionBlock",
    "StructuralSimilarityPriorBranch",
    "Upsampler",
    "bicubic_upsample",
    "box_mean",
]

Modulation = Literal["gsmb", "gfm", "sft"]
SpatialMap = Literal["spcb", "cbam"]
Priors = Literal["both", "ccp", "ssp"]


def bicubic_upsample(x: Tensor, scale: int) -> Tensor:
    """``Bic`` of Eq. 1: the skip branch added to the network's residual.

    The serving post-processor reproduces exactly this call when the network is
    exported with ``bicubic_skip = False``, so do not change it lightly.

    Args:
        x: N x C x h x w.
        scale: integer upscaling factor s.

    Returns:
        N x C x (s*h) x (s*w), PyTorch's bicubic (a = -0.75), half-pixel
        centres (``align_corners=False``), unclamped.
    """
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


def box_mean(x: Tensor, radius: int) -> Tensor:
    """Mean over a (2r+1) x (2r+1) window, averaging only pixels inside the image.

    Excluding the padding keeps the guided filter unbiased at borders (zero
    padding would darken them) and works for any h, w >= 1.

    Args:
        x: N x C x H x W.
        radius: window radius r.
    """
    return F.avg_pool2d(
        x, kernel_size=2 * radius + 1, stride=1, padding=radius, count_include_pad=False
    )


def global_average_pool(x: Tensor) -> Tensor:
    """GAP: N x C x H x W -> N x C (exports as a single ReduceMean)."""
    return x.mean(dim=(2, 3))


class GuidedFilter(nn.Module):
    """Self-guided, per-channel guided filter GF of Eq. 2 (He et al. [37]).

    As in Deep SR-ITM / JSI-GAN, each channel of the input is its own guide, so
    the output is the edge-preserving "base layer" of the LR SDR frame:

        a = var(I) / (var(I) + eps),  b = (1 - a) mean(I),
        q = mean(a) * I + mean(b)     (all means over the box window).

    Parameter-free.

    Args:
        radius: box radius r; window (2r+1)^2. Deep SR-ITM uses 2 (5 x 5).
        eps: regulariser; larger means smoother. Deep SR-ITM uses 0.01 for
            inputs in [0, 1].
    """

    def __init__(self, radius: int = 2, eps: float = 0.01) -> None:
        super().__init__()
        self.radius = radius
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """The base layer q of ``x`` (N x C x H x W), same shape."""
        mean = box_mean(x, self.radius)
        variance = box_mean(x * x, self.radius) - mean * mean
        a = variance / (variance + self.eps)
        b = mean - a * mean
        return box_mean(a, self.radius) * x + box_mean(b, self.radius)


class AnySizeInstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` that also accepts a 1 x 1 feature map.

    ``F.instance_norm`` refuses maps with a single spatial element, which
    the CCCB stack produces for small inputs (five stride-2 pools turn anything
    up to 16 x 16 into 1 x 1). Mathematically the result is then just the affine
    bias, so the check is bypassed by calling the ATen op directly. The state
    dict and the exported ONNX node (InstanceNormalization) are unchanged.
    Same constructor arguments as ``nn.InstanceNorm2d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.instance_norm(
            x,
            self.weight,
            self.bias,
            self.running_mean,
            self.running_var,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
            False,
        )


class ColorConditionBlock(nn.Module):
    """CCCB, Eq. 3: IN o LReLU o avgpool o Conv1x1.

    Identical to AGCM's colour condition block [34]: a 1 x 1 conv (no spatial
    mixing, so it sees colour only), 3 x 3 average pool with stride 2 (halves
    H and W, rounding up), LeakyReLU(0.2), affine instance norm. Unlike AGCM,
    whose last block has no norm, every CCCB here has one, as Eq. 3 states.

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.pool = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
        self.act = nn.LeakyReLU(0.2)
        self.norm = AnySizeInstanceNorm2d(out_channels, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        """N x in_channels x H x W -> N x out_channels x ceil(H/2) x ceil(W/2)."""
        return self.norm(self.act(self.pool(self.conv(x))))


class ColorConformityPriorBranch(nn.Module):
    """CCP extraction branch, Eq. 2: V_c = GAP o Conv1x1 o Dropout o CCCB^Nc o GF(I_L).

    Parameters with the defaults: 29,062 (3->16->32->64->128->128 CCCBs:
    96 + 608 + 2,240 + 8,576 + 16,768; Conv1x1 128->6: 774).

    Args:
        in_channels: channels of I_L.
        widths: output width of each CCCB; its length is N_c (paper: 5). The
            paper leaves them unstated; AGCM's are used.
        prior_dim: length of V_c (paper: 6).
        dropout: dropout probability (unstated in the paper; AGCM's 0.5).
        guided_filter: apply GF first (Table V "w/ GF"). Without it the branch
            is AGCM's condition network (GFM^1 of Table VI).
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64, 128, 128),
        prior_dim: int = 6,
        dropout: float = 0.5,
        guided_filter: bool = True,
    ) -> None:
        super().__init__()
        self.guided_filter: nn.Module = GuidedFilter() if guided_filter else nn.Identity()
        in_widths = (in_channels, *widths[:-1])
        self.blocks = nn.Sequential(
            *(ColorConditionBlock(c_in, c_out) for c_in, c_out in zip(in_widths, widths))
        )
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv2d(widths[-1], prior_dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """N x 3 x h x w -> V_c, N x prior_dim."""
        features = self.blocks(self.guided_filter(x))  # N x 128 x ~h/32 x ~w/32
        return global_average_pool(self.conv(self.dropout(features)))


class StructuralSimilarityConditionBlock(nn.Module):
    """SSCB, Eq. 5: BN o ReLU o Conv3x3 (resolution-preserving).

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """N x in_channels x H x W -> N x out_channels x H x W."""
        return self.norm(self.act(self.conv(x)))


class DropBlock2d(nn.Module):
    """DropBlock (Ghiasi et al. [43]) as used in Eq. 4; identity in eval mode.

    In training, seeds are drawn per sample and channel with the rate gamma
    that makes the expected dropped fraction equal ``drop_prob``; every seed
    zeroes a ``block_size`` x ``block_size`` square around it, and the kept
    activations are rescaled so the mean activation is preserved. Seeds are
    drawn over the whole map (not only where a full block fits), which only
    slightly under-drops at borders and keeps the module shape-agnostic.

    Args:
        drop_prob: fraction of activations to drop (unstated in the paper;
            0.1, the DropBlock paper's usual final value).
        block_size: side of the dropped squares; odd. The paper uses 3.
    """

    def __init__(self, drop_prob: float = 0.1, block_size: int = 3) -> None:
        super().__init__()
        if block_size % 2 != 1:
            raise ValueError(f"block_size must be odd, got {block_size}")
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob
        self.block_size = block_size

    def forward(self, x: Tensor) -> Tensor:
        """``x`` with random blocks zeroed and the rest rescaled (training); ``x`` itself in eval mode."""
        if not self.training or self.drop_prob == 0.0:
            return x
        height, width = x.shape[-2:]
        block_area = self.block_size**2
        valid_seed_area = max((height - self.block_size + 1) * (width - self.block_size + 1), 1)
        gamma = self.drop_prob / block_area * (height * width) / valid_seed_area
        seeds = (torch.rand_like(x) < gamma).to(x.dtype)
        dropped = F.max_pool2d(
            seeds, kernel_size=self.block_size, stride=1, padding=self.block_size // 2
        )
        keep = 1.0 - dropped
        return x * keep * (keep.numel() / keep.sum().clamp_min(1.0))

    def extra_repr(self) -> str:
        """The settings shown by ``print(module)``."""
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}"


class StructuralSimilarityPriorBranch(nn.Module):
    """SSP extraction branch, Eq. 4: V_s = GAP o Conv3x3 o DropBlock o SSCB^Ns(I_L).

    Parameters with the defaults: 79,494 (SSCBs 3->64->64->64: 1,920 +
    37,056 + 37,056; Conv3x3 64->6: 3,462).

    Args:
        in_channels: channels of I_L.
        width: SSCB width (unstated in the paper; the trunk width 64).
        num_blocks: N_s (paper: 3).
        prior_dim: length of V_s (paper: 6).
        drop_prob: DropBlock drop probability (unstated; 0.1).
        block_size: DropBlock block size (paper: 3).
    """

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 64,
        num_blocks: int = 3,
        prior_dim: int = 6,
        drop_prob: float = 0.1,
        block_size: int = 3,
    ) -> None:
        super().__init__()
        in_widths = (in_channels, *(width,) * (num_blocks - 1))
        self.blocks = nn.Sequential(
            *(StructuralSimilarityConditionBlock(c_in, width) for c_in in in_widths)
        )
        self.dropblock = DropBlock2d(drop_prob, block_size)
        self.conv = nn.Conv2d(width, prior_dim, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """N x 3 x h x w -> V_s, N x prior_dim."""
        return global_average_pool(self.conv(self.dropblock(self.blocks(x))))


class GlobalPriorsExtractionModule(nn.Module):
    """GPEM, Eq. 6: V_g = [V_c, V_s].

    Parameters with the defaults: 108,556 (CCP 29,062 + SSP 79,494).

    Args:
        in_channels: channels of I_L.
        prior_dim: length of each of V_c and V_s (paper: 6).
        priors: ``"both"`` (the paper's model, V_g has 2 * prior_dim entries),
            or a single branch for Table V: ``"ccp"`` (V_g = V_c) or ``"ssp"``
            (V_g = V_s).
        guided_filter: whether the CCP branch guided-filters its input.

    Attributes:
        out_dim: length of V_g.
    """

    def __init__(
        self,
        in_channels: int = 3,
        prior_dim: int = 6,
        priors: Priors = "both",
        guided_filter: bool = True,
    ) -> None:
        super().__init__()
        self.ccp: ColorConformityPriorBranch | None = None
        self.ssp: StructuralSimilarityPriorBranch | None = None
        if priors in ("both", "ccp"):
            self.ccp = ColorConformityPriorBranch(
                in_channels, prior_dim=prior_dim, guided_filter=guided_filter
            )
        if priors in ("both", "ssp"):
            self.ssp = StructuralSimilarityPriorBranch(in_channels, prior_dim=prior_dim)
        self.out_dim = prior_dim * (2 if priors == "both" else 1)

    def forward(self, x: Tensor) -> Tensor:
        """N x 3 x h x w -> V_g, N x out_dim."""
        vectors = [branch(x) for branch in (self.ccp, self.ssp) if branch is not None]
        return vectors[0] if len(vectors) == 1 else torch.cat(vectors, dim=1)


class BaseBlock(nn.Module):
    """BB, Eq. 7: Conv3x3 o ReLU o Conv3x3 (no residual of its own; JMRM adds it).

    Args:
        channels: feature width C.
    """

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """BB(F): N x C x H x W, same shape."""
        return self.conv2(self.act(self.conv1(x)))


class SpatialPyramidConvBlock(nn.Module):
    """SPCB, Eq. 8: S_j = Fusion o [Conv3x3, Conv5x5, Conv7x7, Conv9x9] o Conv(F).

    The paper does not give the reducing conv's kernel or width, nor the
    fusion conv's kernel. Here: a 1 x 1 conv C -> ``width`` (cheap, so the
    budget goes to the large receptive fields), four parallel same-padded
    k x k convs ``width`` -> ``width``, concatenation, and a 1 x 1 fusion conv
    4 * ``width`` -> 1. No activations: Eq. 8 lists none.
    Parameters with C = 64, width 11: 20,648 (= 164 w^2 + 73 w + 1).

    Args:
        channels: input feature width C.
        width: reduced width (unstated; 11 to meet Table I's parameter count).
        kernel_sizes: the pyramid's kernels (paper: 3, 5, 7, 9); odd.
    """

    def __init__(
        self, channels: int = 64, width: int = 11, kernel_sizes: Sequence[int] = (3, 5, 7, 9)
    ) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, width, kernel_size=1)
        self.pyramid = nn.ModuleList(
            nn.Conv2d(width, width, kernel_size=k, padding=k // 2) for k in kernel_sizes
        )
        self.fusion = nn.Conv2d(width * len(kernel_sizes), 1, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """N x C x H x W -> S_j, N x 1 x H x W."""
        reduced = self.reduce(x)
        return self.fusion(torch.cat([conv(reduced) for conv in self.pyramid], dim=1))


class SpatialAttention(nn.Module):
    """CBAM's spatial attention [46]: the "SA" comparator of Table VII.

    sigmoid(Conv7x7([mean_c(F), max_c(F)])) -> N x 1 x H x W, used in place of
    S_j. Like CBAM the conv has no bias; CBAM's BatchNorm after it is left out
    (a per-map affine that the GSMB's additive M_g already absorbs).
    Parameters: 98.

    Args:
        kernel_size: conv kernel (CBAM: 7); odd.
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """N x C x H x W -> attention map in (0, 1), N x 1 x H x W."""
        pooled = torch.cat(
            [x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1
        )  # N x 2 x H x W
        return torch.sigmoid(self.conv(pooled))


class GlobalPriorsSpatialModulation(nn.Module):
    """GSMB, Eq. 11: (M_g1, M_g2) = M(V_g); (gamma, beta) = (M_g1, M_g2) + S_j; out = gamma * F + beta.

    M is two independent fully connected layers (Sec. III-C). M_g is broadcast
    over space and S_j over channels, so gamma and beta are C x H x W while the
    block itself holds only 2 (D + 1) C parameters (1,664 for D = 12, C = 64).
    Eq. 11c is followed literally: no "1 +" on gamma.

    Args:
        channels: feature width C.
        prior_dim: length D of V_g.
    """

    def __init__(self, channels: int = 64, prior_dim: int = 12) -> None:
        super().__init__()
        self.scale_mapping = nn.Linear(prior_dim, channels)
        self.shift_mapping = nn.Linear(prior_dim, channels)

    def forward(self, features: Tensor, priors: Tensor, spatial_map: Tensor) -> Tensor:
        """Modulate ``features`` (N x C x H x W) by ``priors`` V_g (N x D) and ``spatial_map`` S_j (N x 1 x H x W)."""
        gamma = self.scale_mapping(priors)[:, :, None, None] + spatial_map
        beta = self.shift_mapping(priors)[:, :, None, None] + spatial_map
        return gamma * features + beta


class GlobalFeatureModulation(nn.Module):
    """GFM, Eq. 10 (CSRNet [36] / AGCM [34]): out = gamma * F + beta. Table VI comparator.

    gamma, beta in R^{C x 1 x 1} come from V_g alone, through the same two
    fully connected layers as the GSMB, minus the spatial map: 2 (D + 1) C
    parameters.

    Args:
        channels: feature width C.
        prior_dim: length D of V_g.
    """

    def __init__(self, channels: int = 64, prior_dim: int = 12) -> None:
        super().__init__()
        self.scale_mapping = nn.Linear(prior_dim, channels)
        self.shift_mapping = nn.Linear(prior_dim, channels)

    def forward(self, features: Tensor, priors: Tensor) -> Tensor:
        """Modulate ``features`` (N x C x H x W) by ``priors`` V_g (N x D)."""
        gamma = self.scale_mapping(priors)[:, :, None, None]
        beta = self.shift_mapping(priors)[:, :, None, None]
        return gamma * features + beta


class SFTConditionNet(nn.Module):
    """Condition network for the SFT comparator, after HDRUNet [39].

    Conv3x3 -> LReLU(0.1) -> Conv1x1 -> LReLU(0.1) -> Conv1x1 -> LReLU(0.1) on
    I_L, giving a condition map at LR resolution that all SFT layers share
    (as all GSMBs share V_g). HDRUNet's is a U-Net with per-scale condition
    branches; GPGMNet's trunk has one scale, so one full-resolution map is
    enough. Parameters: 3,008 with the defaults. Replaces the GPEM.

    Args:
        in_channels: channels of I_L.
        cond_channels: width of the condition map.
    """

    def __init__(self, in_channels: int = 3, cond_channels: int = 32) -> None:
        super().__init__()
        self.out_channels = cond_channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, cond_channels, kernel_size=3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(cond_channels, cond_channels, kernel_size=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(cond_channels, cond_channels, kernel_size=1),
            nn.LeakyReLU(0.1, inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        """N x 3 x h x w -> condition map N x cond_channels x h x w."""
        return self.body(x)


class SpatialFeatureTransform(nn.Module):
    """SFT, Eq. 9 (SFTGAN [38] as in HDRUNet [39]): out = gamma * F + beta. Table VI comparator.

    gamma, beta in R^{C x H x W} come from a condition map: as in HDRUNet,
    each from Conv1x1 -> LReLU(0.1) -> Conv1x1 on it, and gamma is
    parameterised as 1 + scale.
    Parameters: 6,336 with C = 64, 32 condition channels.

    Args:
        channels: feature width C.
        cond_channels: width of the condition map.
    """

    def __init__(self, channels: int = 64, cond_channels: int = 32) -> None:
        super().__init__()
        self.scale = nn.Sequential(
            nn.Conv2d(cond_channels, cond_channels, kernel_size=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(cond_channels, channels, kernel_size=1),
        )
        self.shift = nn.Sequential(
            nn.Conv2d(cond_channels, cond_channels, kernel_size=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(cond_channels, channels, kernel_size=1),
        )

    def forward(self, features: Tensor, condition: Tensor) -> Tensor:
        """Modulate ``features`` (N x C x H x W) by ``condition`` (N x cond_channels x H x W)."""
        return features * (1.0 + self.scale(condition)) + self.shift(condition)


class JointModulatedResidualModule(nn.Module):
    """JMRM, Eq. 12: JMRM(F, V) = GSMB{BB(F) | V, SPCB o BB(F)} + F.

    The modulation and the spatial-map producer are switchable for the
    ablations: with ``modulation="gfm"`` or ``"sft"`` there is no spatial map
    (Eq. 10 / Eq. 9 take none), so no SPCB/SA is built.
    Parameters with the defaults: 96,168 (BB 73,856 + SPCB 20,648 + GSMB 1,664).

    Args:
        channels: feature width C.
        condition_dim: length of V_g (gsmb/gfm) or width of the SFT condition map.
        modulation: ``"gsmb"`` (Eq. 11), ``"gfm"`` (Eq. 10) or ``"sft"`` (Eq. 9).
        spatial: producer of the GSMB's spatial map: ``"spcb"`` (Eq. 8) or
            ``"cbam"`` (CBAM spatial attention, Table VII).
        spcb_width: SPCB's reduced width.
    """

    def __init__(
        self,
        channels: int = 64,
        condition_dim: int = 12,
        modulation: Modulation = "gsmb",
        spatial: SpatialMap = "spcb",
        spcb_width: int = 11,
    ) -> None:
        super().__init__()
        self.base = BaseBlock(channels)
        self.spatial: nn.Module | None = None
        self.modulation: nn.Module
        if modulation == "gsmb":
            self.spatial = (
                SpatialPyramidConvBlock(channels, spcb_width)
                if spatial == "spcb"
                else SpatialAttention()
            )
            self.modulation = GlobalPriorsSpatialModulation(channels, condition_dim)
        elif modulation == "gfm":
            self.modulation = GlobalFeatureModulation(channels, condition_dim)
        else:
            self.modulation = SpatialFeatureTransform(channels, condition_dim)

    def forward(self, features: Tensor, condition: Tensor) -> Tensor:
        """JMRM(F, V) of ``features`` (N x C x H x W); ``condition`` is V_g (N x D) or the SFT condition map."""
        body = self.base(features)
        if self.spatial is None:
            modulated = self.modulation(body, condition)
        else:
            modulated = self.modulation(body, condition, self.spatial(body))
        return modulated + features


class Upsampler(nn.Sequential):
    """Up of Eq. 1: (Conv3x3 C -> 4C, PixelShuffle(2)) once per factor of 2.

    No activation between stages, as in EDSR/BasicSR. 147,712 parameters per
    stage at C = 64.

    Args:
        scale: 2 or 4 (one or two stages, Sec. IV-A).
        channels: feature width C (kept through the module).
    """

    def __init__(self, scale: int, channels: int = 64) -> None:
        if scale not in (2, 4):
            raise ValueError(f"scale must be 2 or 4, got {scale}")
        layers: list[nn.Module] = []
        for _ in range(scale.bit_length() - 1):
            layers += [
                nn.Conv2d(channels, 4 * channels, kernel_size=3, padding=1),
                nn.PixelShuffle(2),
            ]
        super().__init__(*layers)


class GPGMNet(nn.Module):
    """GPGMNet, Eq. 1: I_H = CL o Up o CB o JMRM^Nj{GPEM(I_L), CF(I_L)} + Bic(I_L).

    CF = Conv3x3(3 -> C), N_j JMRMs sharing one V_g, CB = Conv3x3(C -> C),
    Up = ``Upsampler``, CL = Conv3x3(C -> 3), Bic = ``bicubic_upsample``.
    Following Eq. 1 and the Fig. 3 description, there is no long residual
    around the JMRM stack (CF's output is not re-added after CB): the only
    skips are each JMRM's own (Eq. 12) and the image-level bicubic one.

    Parameters (defaults = the paper's model): x2 777,559, x4 925,271
    (Table I: 0.77M, 0.92M). Ablation variants, x4 (x2 is 147,712 fewer):
    GFM 822,031; GFM^1 (AGCM condition net) 738,697; SFT 739,843;
    CBAM-SA 822,521; no GF unchanged (GF has no parameters); CCP only
    841,937; SSP only 892,369. See ``PAPER_ABLATIONS`` for the switch settings.

    Args:
        scale: 2 or 4.
        bicubic_skip: add Bic(I_L). A plain attribute, toggle it after
            construction: with False the forward returns only the residual
            CL o Up o CB o ... term, which is what gets exported to ONNX (the
            server adds the bicubic image itself).
        modulation: ``"gsmb"`` (paper), ``"gfm"`` or ``"sft"`` (Table VI).
            With ``"sft"`` the GPEM is replaced by ``SFTConditionNet``.
        spatial: ``"spcb"`` (paper) or ``"cbam"`` (Table VII). GSMB only.
        guided_filter: CCP branch guided-filters its input (paper; Table V).
        priors: GPEM branches: ``"both"`` (paper), ``"ccp"`` or ``"ssp"``
            (Table V); single-branch V_g has 6 entries instead of 12.
        num_features: trunk width C (paper: 64).
        num_modules: N_j (paper: 5).
        conventions: K, the number of SDR conventions the network can be
            told about (``gpgmnet.gradings``). 0 (default) is the paper's
            model. With K > 0 the forward takes a one-hot ``convention``
            (N x K) appended to V_g, so every GSMB/GFM maps the
            (12 + K)-vector V_g' = [V_g, c] with the same Linear form
            (Eq. 9 with D = 12 + K); K x C x 2 x N_j more weights (x4, K = 7:
            +4,480). Not with SFT, whose condition is a map.
        classical_skip: indices of conventions whose skip is Bic of the
            classical conversion of I_L (BT.2408 placement,
            :func:`sritm_serving.processing.classical_hdr10_codes`) instead of
            Bic(I_L): for SDR that conversion already inverts to first order
            (``bt2408``), the residual then learns only what it misses. The
            caller passes that LR image as ``classical``; it adds no weights.

    A switch set to a non-default value where it has no effect (``spatial``
    without GSMB; ``guided_filter`` without a CCP branch or with SFT;
    ``priors`` with SFT) raises ``ValueError`` rather than being ignored.

    Input N x 3 x h x w, any h, w >= 1; output N x 3 x (s*h) x (s*w), unclamped.
    """

    def __init__(
        self,
        scale: int = 4,
        bicubic_skip: bool = True,
        modulation: Modulation = "gsmb",
        spatial: SpatialMap = "spcb",
        guided_filter: bool = True,
        priors: Priors = "both",
        num_features: int = 64,
        num_modules: int = 5,
        conventions: int = 0,
        classical_skip: Sequence[int] = (),
    ) -> None:
        super().__init__()
        _check_choice("modulation", modulation, Modulation)
        if conventions < 0:
            raise ValueError(f"conventions must be >= 0, got {conventions}")
        if conventions and modulation == "sft":
            raise ValueError("conventions need a prior vector (modulation='gsmb' or 'gfm'), not 'sft'")
        _check_choice("spatial", spatial, SpatialMap)
        _check_choice("priors", priors, Priors)
        if scale not in (2, 4):
            raise ValueError(f"scale must be 2 or 4, got {scale}")
        if spatial != "spcb" and modulation != "gsmb":
            raise ValueError(f"spatial={spatial!r} needs modulation='gsmb'")
        if modulation == "sft" and (priors != "both" or not guided_filter):
            raise ValueError("modulation='sft' uses no GPEM; leave priors/guided_filter default")
        if not guided_filter and priors == "ssp":
            raise ValueError("guided_filter=False needs a CCP branch (priors='both' or 'ccp')")

        self.scale = scale
        self.bicubic_skip = bicubic_skip
        self.condition_net: nn.Module
        if modulation == "sft":
            sft_condition = SFTConditionNet(3)
            self.condition_net = sft_condition
            condition_dim = sft_condition.out_channels
        else:
            gpem = GlobalPriorsExtractionModule(3, priors=priors, guided_filter=guided_filter)
            self.condition_net = gpem
            condition_dim = gpem.out_dim + conventions
        self.conventions = conventions
        if any(not 0 <= index < conventions for index in classical_skip):
            raise ValueError(f"classical_skip {list(classical_skip)} names conventions outside 0..{conventions - 1}")
        self.classical_skip = tuple(int(index) for index in classical_skip)
        self.conv_first = nn.Conv2d(3, num_features, kernel_size=3, padding=1)
        self.body = nn.ModuleList(
            JointModulatedResidualModule(num_features, condition_dim, modulation, spatial)
            for _ in range(num_modules)
        )
        self.conv_after_body = nn.Conv2d(num_features, num_features, kernel_size=3, padding=1)
        self.upsample = Upsampler(scale, num_features)
        self.conv_last = nn.Conv2d(num_features, 3, kernel_size=3, padding=1)

    def forward(self, x: Tensor, convention: Tensor | None = None, classical: Tensor | None = None) -> Tensor:
        """I_L N x 3 x h x w -> I_H (or the residual alone) N x 3 x (s*h) x (s*w).

        Args:
            x: the LR input.
            convention: N x K one-hot (float) when the network has K > 0
                conventions; None means convention 0 (``bt2446a``) for all.
            classical: N x 3 x h x w, the classical conversion of ``x``; needed
                only with the skip on, for samples whose convention is in
                ``classical_skip``.
        """
        condition = self.condition_net(x)  # V_g: N x D, or SFT map: N x 32 x h x w
        if self.conventions:
            if convention is None:
                convention = F.one_hot(torch.zeros(x.shape[0], dtype=torch.long, device=x.device), self.conventions)
            if convention.shape != (x.shape[0], self.conventions):
                raise ValueError(f"convention must be N x {self.conventions}, got {tuple(convention.shape)}")
            condition = torch.cat([condition, convention.to(condition.dtype)], dim=1)
        features = self.conv_first(x)
        for module in self.body:
            features = module(features, condition)
        residual = self.conv_last(self.upsample(self.conv_after_body(features)))
        if not self.bicubic_skip:
            return residual
        skip_source = x
        if self.classical_skip and convention is not None:
            uses_classical = convention[:, list(self.classical_skip)].sum(dim=1).to(x.dtype)[:, None, None, None]
            if classical is not None:
                skip_source = x + uses_classical * (classical.to(x.dtype) - x)
            elif bool(uses_classical.any()):
                raise ValueError("this network's skip for the given convention needs the classical conversion")
        return residual + bicubic_upsample(skip_source, self.scale)


def _check_choice(name: str, value: object, choices: object) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


PAPER_ABLATIONS: Mapping[str, Mapping[str, object]] = MappingProxyType(
    {
        # Table V: GPEM branches, with/without guided filtering.
        "V-a": {"priors": "ccp", "guided_filter": False},
        "V-b": {"priors": "ccp"},
        "V-c": {"priors": "ssp"},
        "V-d": {"guided_filter": False},
        "V-e": {},
        # Table VI: modulation block. GFM^1 = GFM with AGCM's condition network,
        # which is the CCP branch without guided filtering.
        "VI-SFT": {"modulation": "sft"},
        "VI-GFM1": {"modulation": "gfm", "priors": "ccp", "guided_filter": False},
        "VI-GFM2": {"modulation": "gfm"},
        "VI-GSMB": {},
        # Table VII: spatial map producer.
        "VII-a": {"spatial": "cbam"},
        "VII-b": {},
    }
)
"""GPGMNet keyword arguments reproducing each column of Tables V-VII (add ``scale``)."""
