"""Tag bitmasks (``bitMaskData``, ``0x...``: bit i set = sample i in the tag) in linear time.

Setting bits one by one on a Python int (``mask |= 1 << i``) copies the whole growing int each time,
quadratic in the number of samples, and so is testing them with ``mask >> i & 1``. These helpers go
through a byte array instead: one pass over the indices, one over the bytes.
"""

from __future__ import annotations

from collections.abc import Iterable


def encode(indices: Iterable[int], size: int) -> str:
    """``0x...`` with the bits of ``indices`` (each in ``0 .. size-1``) set; ``0x0`` when none is."""
    bits = bytearray((size + 7) // 8)
    for i in indices:
        bits[i >> 3] |= 1 << (i & 7)
    bits.reverse()  # the most significant byte first
    digits = bits.hex().lstrip("0")
    return "0x" + (digits or "0")


def decode(mask: str) -> bytes:
    """The bits of a ``0x...`` mask, least significant byte first (bit i: ``b[i >> 3] >> (i & 7) & 1``)."""
    digits = mask[2:] if mask.startswith(("0x", "0X")) else mask
    if len(digits) % 2:
        digits = "0" + digits
    out = bytearray.fromhex(digits)
    out.reverse()
    return bytes(out)


def members(mask: str, indices: Iterable[int]) -> list[bool]:
    """For each of ``indices``: whether its bit is set in ``mask``."""
    bits = decode(mask)
    n = len(bits)
    return [(i >> 3) < n and bool(bits[i >> 3] >> (i & 7) & 1) for i in indices]
