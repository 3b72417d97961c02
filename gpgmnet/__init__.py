"""GPGMNet: joint super-resolution and inverse tone mapping (SDR -> 4K HDR10).

The network, its checkpoints, data, training and evaluation: the one package
of the project that needs torch. The serving contract and the colour science
it builds on are in :mod:`sritm_core`.
"""

from gpgmnet.arch import GPGMNet, bicubic_upsample

__all__ = ["GPGMNet", "bicubic_upsample"]
