"""The SDK's exceptions: one base class, and one subclass per thing a caller reacts to differently."""

from __future__ import annotations


class SritmError(Exception):
    """Base class of every error the SDK raises."""


class InvalidFrameError(SritmError, ValueError):
    """The frame cannot be converted: rejected by the SDK's layout check or by the server.

    Never retried: the same bytes would be rejected again. ``server_message`` is
    the server's own wording when the server rejected it (``None`` for the
    SDK's check), ``pts`` the frame's timestamp when known.
    """

    def __init__(self, message: str, *, server_message: str | None = None, pts: int | None = None) -> None:
        super().__init__(message)
        self.server_message = server_message
        self.pts = pts


class ServerUnavailableError(SritmError, ConnectionError):
    """The server could not be reached, was not ready, or did not answer, within the deadline."""


class ContractMismatchError(SritmError):
    """The server's model does not have the tensors, types or shapes of ``sritm_core.contract``."""


class ServerError(SritmError):
    """Any other failure reported by the server; ``status`` is the gRPC status name when there is one."""

    def __init__(self, message: str, *, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status
