"""Test patterns as arrays of little-endian 64-bit words, built with numpy (no
per-word Python loop).

    constant      every word the same (--value, or a generation-dependent default)
    walking-ones  word i has bit (i + generation) % 64 set
    random        PCG64 seeded with (seed, generation): reproducible
    tagged        every word encodes (generation, its own physical address), so a
                  corrupted word tells where its bytes came from and how old they are

Tag layout: bits 63..56 the marker 0xA5, 55..40 the generation, 39..0 the word's
physical address divided by 8 (addresses up to 8 TiB).
"""

from __future__ import annotations

import errno as E

import numpy as np

from .errors import InvalidRequestError
from .names import PATTERNS

TAG_MARKER = 0xA5
_ADDR_BITS = 40
_ADDR_MASK = (1 << _ADDR_BITS) - 1
_GEN_MASK = 0xFFFF


def encode_tag(generation: int, phys_addr: int) -> int:
    return (TAG_MARKER << 56) | ((generation & _GEN_MASK) << 40) | ((phys_addr >> 3) & _ADDR_MASK)


def decode_tags(words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each word: is it a tag, its generation, the physical address it names."""
    w = words.astype(np.uint64, copy=False)
    is_tag = (w >> np.uint64(56)) == np.uint64(TAG_MARKER)
    gen = (w >> np.uint64(40)) & np.uint64(_GEN_MASK)
    addr = (w & np.uint64(_ADDR_MASK)) << np.uint64(3)
    return is_tag, gen, addr


def generate(
    pattern: str,
    *,
    phys_addr: int,
    size: int,
    generation: int = 1,
    seed: int = 0,
    value: int = 0,
) -> np.ndarray:
    """The expected contents of [phys_addr, phys_addr + size) for one generation."""
    if size % 8 or phys_addr % 8:
        raise InvalidRequestError("patterns cover whole, aligned 64-bit words", E.EINVAL)
    n = size // 8
    if pattern == "tagged":
        base = np.uint64(encode_tag(generation, phys_addr))
        return base + np.arange(n, dtype=np.uint64)  # the address field counts words
    if pattern == "random":
        rng = np.random.Generator(np.random.PCG64([seed & (2**63 - 1), generation & _GEN_MASK]))
        return rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False)
    if pattern == "walking-ones":
        shifts = (np.arange(n, dtype=np.uint64) + np.uint64(generation % 64)) % np.uint64(64)
        return np.left_shift(np.uint64(1), shifts)
    if pattern == "constant":
        word = value or (0x5A5A5A5A5A5A5A00 | (generation & 0xFF))
        return np.full(n, word & (2**64 - 1), dtype=np.uint64)
    raise InvalidRequestError(f"unknown pattern {pattern!r}: one of {', '.join(PATTERNS)}",
                              E.EINVAL)  # fmt: skip
