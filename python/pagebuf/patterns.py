"""Test patterns as arrays of little-endian 64-bit words, built with numpy (no
per-word Python loop).

    constant      every word the same: --value exactly, else 0x5A5A5A5A5A5A5Axx with the
                  generation's low byte (an explicit value is the same in every
                  generation, so a stale line cannot be told from a fresh one)
    walking-ones  word i has bit (i + generation) % 64 set
    random        PCG64 seeded with (seed, generation): reproducible
    tagged        every word encodes (generation, its own physical address), so a
                  corrupted word tells where its bytes came from and how old they are

Tag layout: bits 63..56 the marker 0xA5, 55..40 the generation, 39..0 the word's
physical address divided by 8 (addresses up to 8 TiB).

A pattern is built in place, a cache-sized chunk at a time, into an array the caller
may provide (a mapping, a reused buffer): no temporary the size of the region.
"""

from __future__ import annotations

import errno as E
from functools import lru_cache

import numpy as np

from .errors import InvalidRequestError
from .names import PATTERNS

TAG_MARKER = 0xA5
_ADDR_BITS = 40
_ADDR_MASK = (1 << _ADDR_BITS) - 1
_GEN_MASK = 0xFFFF
_WORD_MASK = (1 << 64) - 1
CHUNK_WORDS = 1 << 17  # 1 MiB: what is built at a time stays in the cache


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
    value: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The expected contents of [phys_addr, phys_addr + size) for one generation:
    written into `out` (size / 8 contiguous, writable 64-bit words) if given, and
    returned."""
    if size % 8 or phys_addr % 8 or size < 0:
        raise InvalidRequestError("patterns cover whole, aligned 64-bit words", E.EINVAL)
    if out is None:
        out = np.empty(size // 8, dtype=np.uint64)
    elif out.dtype != np.uint64 or out.shape != (size // 8,) or not out.flags.c_contiguous:
        raise InvalidRequestError(f"output for a {size}-byte pattern: {size // 8} contiguous "
                                  "64-bit words", E.EINVAL)  # fmt: skip
    return fill_words(pattern, out, phys_addr=phys_addr, generation=generation, seed=seed,
                      value=value)  # fmt: skip


def fill_words(
    pattern: str,
    out: np.ndarray,
    *,
    phys_addr: int,
    generation: int,
    seed: int = 0,
    value: int | None = None,
    first: int = 0,
) -> np.ndarray:
    """Words first .. first + out.size of the pattern of a region starting at
    phys_addr, written into `out` (contiguous 64-bit words) and returned."""
    if pattern == "tagged":
        _fill_tagged(out, encode_tag(generation, phys_addr) + first)
    elif pattern == "random":
        _fill_random(out, seed, generation, first)
    elif pattern == "walking-ones":
        _fill_periodic(out, _walking_ones((first + generation) % 64))
    elif pattern == "constant":
        word = (0x5A5A5A5A5A5A5A00 | (generation & 0xFF)) if value is None else value
        out.fill(word & _WORD_MASK)
    else:
        raise InvalidRequestError(f"unknown pattern {pattern!r}: one of {', '.join(PATTERNS)}",
                                  E.EINVAL)  # fmt: skip
    return out


@lru_cache(maxsize=1)
def _ramp() -> np.ndarray:
    """0, 1, 2, ... for one chunk (read-only, shared)."""
    ramp = np.arange(CHUNK_WORDS, dtype=np.uint64)
    ramp.flags.writeable = False
    return ramp


def _fill_tagged(out: np.ndarray, base: int) -> None:
    """Word i is base + i (mod 2**64): the address field counts words."""
    ramp = _ramp()
    for start in range(0, out.size, CHUNK_WORDS):
        stop = min(out.size, start + CHUNK_WORDS)
        np.add(ramp[: stop - start], np.uint64((base + start) & _WORD_MASK),
               out=out[start:stop])  # fmt: skip


def _fill_random(out: np.ndarray, seed: int, generation: int, first: int) -> None:
    """PCG64's stream from draw `first` on: one 64-bit draw per word."""
    bits = np.random.PCG64([seed & (2**63 - 1), generation & _GEN_MASK])
    if first:
        bits.advance(first)
    rng = np.random.Generator(bits)
    for start in range(0, out.size, CHUNK_WORDS):
        stop = min(out.size, start + CHUNK_WORDS)
        out[start:stop] = rng.integers(0, 2**64, size=stop - start, dtype=np.uint64,
                                       endpoint=False)  # fmt: skip


def _walking_ones(rotation: int) -> np.ndarray:
    """One period of walking ones whose first word has bit `rotation` set."""
    shifts = (np.arange(64, dtype=np.uint64) + np.uint64(rotation)) % np.uint64(64)
    return np.left_shift(np.uint64(1), shifts)


def _fill_periodic(out: np.ndarray, period: np.ndarray) -> None:
    """`period` repeated over `out`, the last repetition cut short."""
    whole = out.size - out.size % period.size
    out[:whole].reshape(-1, period.size)[:] = period
    out[whole:] = period[: out.size - whole]
