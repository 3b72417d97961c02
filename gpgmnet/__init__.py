"""GPGMNet: joint super-resolution and inverse tone mapping (SDR -> 4K HDR10).

``GPGMNet`` and ``bicubic_upsample`` live in ``gpgmnet.arch`` and are loaded on
first access (PEP 562), because torch is an optional extra: clients that only
need the numpy module ``gpgmnet.colour`` must be able to import this package
without torch installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpgmnet.arch import GPGMNet, bicubic_upsample

__all__ = ["GPGMNet", "bicubic_upsample"]

_LAZY_FROM_ARCH = frozenset(__all__)


def __getattr__(name: str) -> Any:
    if name in _LAZY_FROM_ARCH:
        value = getattr(importlib.import_module(f"{__name__}.arch"), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
