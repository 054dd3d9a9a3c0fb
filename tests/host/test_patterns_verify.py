"""Patterns and the classifier on plain memory (the VM suite repeats this on buffers)."""

from __future__ import annotations

import numpy as np
import pytest

from pagebuf import patterns as P
from pagebuf.verify import verify

PHYS, SIZE, GEN, SEED = 0x1234_5000, 16384, 7, 11


def region(pattern: str, generation: int = GEN) -> bytearray:
    return bytearray(P.generate(pattern, phys_addr=PHYS, size=SIZE, generation=generation,
                                seed=SEED).tobytes())  # fmt: skip


def check(buf: bytearray, pattern: str):  # noqa: ANN201 - VerifyResult
    return verify(buf, pattern=pattern, phys_addr=PHYS, generation=GEN, seed=SEED, line_size=64)


def test_tag_round_trip() -> None:
    words = np.array([P.encode_tag(g, a) for g, a in [(1, 0x1000), (65535, 0x7F_FFFF_FFF8)]],
                     dtype=np.uint64)  # fmt: skip
    is_tag, gen, addr = P.decode_tags(words)
    assert is_tag.all() and gen.tolist() == [1, 65535] and addr.tolist() == [0x1000, 0x7FFFFFFFF8]
    assert not P.decode_tags(np.array([0, 2**64 - 1], dtype=np.uint64))[0].any()


def test_tagged_words_name_their_own_address() -> None:
    words = P.generate("tagged", phys_addr=PHYS, size=SIZE, generation=GEN)
    _, gen, addr = P.decode_tags(words)
    assert (addr == PHYS + 8 * np.arange(SIZE // 8, dtype=np.uint64)).all()
    assert (gen == GEN).all()


@pytest.mark.parametrize("pattern", P.PATTERNS)
def test_reproducible_and_generation_dependent(pattern: str) -> None:
    a, b = region(pattern), region(pattern)
    assert a == b
    assert region(pattern, GEN + 1) != a
    assert check(a, pattern).ok


def test_walking_ones_and_random_shape() -> None:
    w = P.generate("walking-ones", phys_addr=0, size=64 * 8, generation=0)
    assert w.tolist() == [1 << i for i in range(64)]
    r = P.generate("random", phys_addr=0, size=1 << 16, generation=1, seed=5)
    assert len(np.unique(r)) > (1 << 13) - 4  # no repeating cycle
    assert P.generate("random", phys_addr=0, size=64, generation=1, seed=6)[0] != r[0]


def test_bad_region_geometry_is_refused() -> None:
    from pagebuf.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError):
        P.generate("tagged", phys_addr=4, size=64)
    with pytest.raises(InvalidRequestError):
        P.generate("nonsense", phys_addr=0, size=64)


@pytest.mark.parametrize("pattern", P.PATTERNS)
def test_finds_exactly_the_corrupted_lines(pattern: str) -> None:
    buf = region(pattern)
    old = region(pattern, GEN - 3)
    buf[640:704] = old[640:704]  # a write-back of a line three generations old
    buf[128:192] = bytes(64)  # reverted to the module's zero fill
    buf[1030:1031] = b"\x99"  # one flipped byte
    buf[4096 + 8 : 4096 + 16] = b"\x00\x11" * 4  # one odd word
    if pattern == "tagged":
        buf[8192:8256] = buf[12288:12352]  # another address's line
    r = check(buf, pattern)
    got = {m.phys_addr - PHYS: m.classification for m in r.mismatches}
    want = {640: "stale", 128: "stale", 1024: "random", 4096: "random"}
    if pattern == "tagged":
        want[8192] = "foreign"
    assert got == want
    assert r.bad_lines == len(want) and sum(r.counts.values()) == len(want)
    by = {m.phys_addr - PHYS: m for m in r.mismatches}
    assert by[640].generation == GEN - 3 and by[128].generation is None
    assert by[1024].bad_words == 1
    if pattern == "tagged":
        assert by[8192].source == PHYS + 12288
    d = r.to_dict()
    assert d["ok"] is False and d["mismatches"][0]["phys_addr_hex"].startswith("0x")


def test_partly_stale_line_is_random() -> None:
    buf = region("tagged")
    old = region("tagged", GEN - 1)
    buf[64:96] = old[64:96]
    buf[96:104] = b"\x42" * 8
    r = check(buf, "tagged")
    assert [m.classification for m in r.mismatches] == ["random"]


def test_max_reports_caps_the_list_not_the_counts() -> None:
    buf = bytearray(SIZE)  # everything reverted to zero
    r = verify(buf, pattern="tagged", phys_addr=PHYS, generation=GEN, line_size=64, max_reports=3)
    assert r.bad_lines == SIZE // 64 == r.counts["stale"]
    assert len(r.mismatches) == 3
