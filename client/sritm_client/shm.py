"""System shared memory for a server on the same host: the frames skip gRPC's serialisation.

A :class:`SlotPool` holds one input and one output region per frame in flight.
It is sans-IO (it only creates and destroys the local regions), so the sync and
the asyncio client share it and each does its own register/unregister calls.
Regions are sized for the frame that needs them, grown when a larger frame
comes and reused otherwise; the owner destroys every region it ever created
(:meth:`SlotPool.close`), also on errors.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.utils.shared_memory as system_shm
from numpy.typing import NDArray

__all__ = ["region_prefix", "Region", "FrameSlot", "SlotPool"]

_region_numbers = itertools.count()


def region_prefix() -> str:
    """The name prefix of this process's regions, on the server and under ``/dev/shm``.

    The pid makes leftovers attributable (and lets tests look for them); it is
    read per call so that a forked child does not reuse its parent's names.
    """
    return f"sritm-{os.getpid()}-"


@dataclass(eq=False)
class Region:
    """One POSIX shared-memory region: the local mapping, and its name on the server."""

    name: str
    byte_size: int
    handle: Any = field(repr=False)
    registered: bool = False

    @property
    def key(self) -> str:
        """The region's shared-memory key, ``/<name>``: its name under ``/dev/shm``."""
        return f"/{self.name}"

    @classmethod
    def create(cls, byte_size: int) -> Region:
        """A new region of ``byte_size`` bytes under this process's next name, not yet registered."""
        name = f"{region_prefix()}{next(_region_numbers)}"
        # create_only: a stale region of the same name must never be silently adopted.
        handle = system_shm.create_shared_memory_region(name, f"/{name}", byte_size, create_only=True)
        return cls(name, byte_size, handle)

    def write(self, array: NDArray[Any]) -> None:
        """Copies ``array``'s bytes to the start of the region."""
        system_shm.set_shared_memory_region(self.handle, [np.ascontiguousarray(array)])

    def read(self, dtype: type[np.generic], shape: tuple[int, ...]) -> NDArray[Any]:
        """A copy of the region's first bytes as an array; no view may outlive the region."""
        view = system_shm.get_contents_as_numpy(self.handle, dtype, list(shape))
        copy: NDArray[Any] = np.array(view, copy=True)
        del view
        return copy

    def destroy(self) -> None:
        """Unmap and unlink; the server must have been told to unregister it first (or be gone)."""
        system_shm.destroy_shared_memory_region(self.handle)


@dataclass(eq=False)
class FrameSlot:
    """The input and output region of one frame in flight."""

    input: Region
    output: Region


class SlotPool:
    """Up to ``size`` slots, each reused by frame after frame and grown to the largest it has carried."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a slot pool needs at least one slot, not {size}")
        self._size = size
        self._free: list[FrameSlot] = []
        self._busy: list[FrameSlot] = []

    def acquire(self, input_bytes: int, output_bytes: int) -> tuple[FrameSlot, list[Region]]:
        """A slot whose regions fit, and the regions it replaced (unregister, then destroy them).

        New regions come unregistered (``Region.registered`` is False).
        """
        fitting = [s for s in self._free if s.input.byte_size >= input_bytes and s.output.byte_size >= output_bytes]
        retired: list[Region] = []
        if fitting:
            # The smallest that fits keeps the big slots for big frames.
            slot = min(fitting, key=_slot_bytes)
            self._free.remove(slot)
        elif len(self._free) + len(self._busy) < self._size:
            new_input, new_output = _create_pair(input_bytes, output_bytes)
            assert new_input is not None and new_output is not None
            slot = FrameSlot(new_input, new_output)
        elif self._free:
            slot = max(self._free, key=_slot_bytes)
            new_input, new_output = _create_pair(
                input_bytes if slot.input.byte_size < input_bytes else 0,
                output_bytes if slot.output.byte_size < output_bytes else 0,
            )
            self._free.remove(slot)
            if new_input is not None:
                retired.append(slot.input)
                slot.input = new_input
            if new_output is not None:
                retired.append(slot.output)
                slot.output = new_output
        else:
            raise RuntimeError(f"all {self._size} shared-memory slots are in use")
        self._busy.append(slot)
        return slot, retired

    def release(self, slot: FrameSlot) -> None:
        """Gives back a slot from :meth:`acquire`, for the next frame to reuse."""
        self._busy.remove(slot)
        self._free.append(slot)

    def regions(self) -> list[Region]:
        """Every region of the pool, in free and busy slots."""
        return [region for slot in self._free + self._busy for region in (slot.input, slot.output)]

    def close(self) -> list[Region]:
        """Forget every slot; returns their regions, for the owner to unregister and destroy."""
        regions = self.regions()
        self._free.clear()
        self._busy.clear()
        return regions



def _slot_bytes(slot: FrameSlot) -> int:
    return slot.input.byte_size + slot.output.byte_size


def _create_pair(input_bytes: int, output_bytes: int) -> tuple[Region | None, Region | None]:
    """New regions of these sizes (None for a size of 0); nothing is left behind if one fails."""
    new_input = Region.create(input_bytes) if input_bytes else None
    try:
        new_output = Region.create(output_bytes) if output_bytes else None
    except BaseException:
        if new_input is not None:
            new_input.destroy()
        raise
    return new_input, new_output
