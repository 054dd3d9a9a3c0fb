"""Patterns and the classifier on plain memory (the VM suite repeats this on buffers)."""

from __future__ import annotations

import numpy as np
import pytest

from pagebuf import patterns as P
from pagebuf.verify import CHUNK, fill, verify

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


def reference(pattern: str, phys_addr: int, size: int, generation: int, seed: int,
              value: int | None = None) -> np.ndarray:  # fmt: skip
    """The patterns as first written: one whole-region numpy expression each (except
    that an explicit --value 0 is now 0, where it once meant the default)."""
    n = size // 8
    if pattern == "tagged":
        return np.uint64(P.encode_tag(generation, phys_addr)) + np.arange(n, dtype=np.uint64)
    if pattern == "random":
        rng = np.random.Generator(np.random.PCG64([seed & (2**63 - 1), generation & 0xFFFF]))
        return rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False)
    if pattern == "walking-ones":
        shifts = (np.arange(n, dtype=np.uint64) + np.uint64(generation % 64)) % np.uint64(64)
        return np.left_shift(np.uint64(1), shifts)
    word = (0x5A5A5A5A5A5A5A00 | (generation & 0xFF)) if value is None else value
    return np.full(n, word & (2**64 - 1), dtype=np.uint64)


# Sizes around the generator's chunk (CHUNK_WORDS words), and odd ones.
SIZES = (0, 8, 520, 4096, P.CHUNK_WORDS * 8 - 8, P.CHUNK_WORDS * 8, 2 * P.CHUNK_WORDS * 8 + 136)


@pytest.mark.parametrize("pattern", P.PATTERNS)
@pytest.mark.parametrize("size", SIZES)
def test_generator_matches_the_reference_bit_for_bit(pattern: str, size: int) -> None:
    cases = [(PHYS, GEN, SEED, None), (0, 0, 0, None), (0x7FF_FFFF_F000, 65537, 2**63 + 5, 0),
             (0x40, 63, 1, 0xDEAD_BEEF)]  # fmt: skip
    for phys, gen, seed, value in cases:
        want = reference(pattern, phys, size, gen, seed, value)
        got = P.generate(pattern, phys_addr=phys, size=size, generation=gen, seed=seed, value=value)
        assert got.dtype == np.uint64 and got.tobytes() == want.tobytes()
        out = np.full(size // 8, 0x77, dtype=np.uint64)  # a reused buffer: all overwritten
        assert P.generate(pattern, phys_addr=phys, size=size, generation=gen, seed=seed,
                          value=value, out=out) is out  # fmt: skip
        assert out.tobytes() == want.tobytes()


@pytest.mark.parametrize("pattern", P.PATTERNS)
def test_any_stretch_of_a_pattern_is_that_slice_of_it(pattern: str) -> None:
    n = 3 * P.CHUNK_WORDS // 2
    whole = reference(pattern, PHYS, n * 8, GEN, SEED)
    for first, count in [(0, 1), (1, 63), (65, 64), (P.CHUNK_WORDS - 3, P.CHUNK_WORDS // 2)]:
        out = np.empty(count, dtype=np.uint64)
        P.fill_words(pattern, out, phys_addr=PHYS, generation=GEN, seed=SEED, first=first)
        assert (out == whole[first : first + count]).all()


def test_generate_refuses_an_output_that_does_not_fit() -> None:
    from pagebuf.errors import InvalidRequestError

    for out in (np.empty(7, np.uint64), np.empty(8, np.int64), np.empty(16, np.uint64)[::2]):
        with pytest.raises(InvalidRequestError) as err:
            P.generate("tagged", phys_addr=0, size=64, out=out)
        assert err.value.errno == 22


@pytest.mark.parametrize("pattern", P.PATTERNS)
def test_fill_writes_the_pattern_in_place(pattern: str) -> None:
    buf = bytearray(b"\xee" * (P.CHUNK_WORDS * 8 + 4096))
    fill(buf, pattern=pattern, phys_addr=PHYS, generation=GEN, seed=SEED)
    assert bytes(buf) == reference(pattern, PHYS, len(buf), GEN, SEED).tobytes()


def test_a_fully_stale_buffer_counts_every_line_and_says_the_list_is_cut() -> None:
    """An order-8 buffer (1 MiB, 16384 lines) reverted to zero: 16384 bad lines, all
    stale, whatever the length of the list."""
    size = 1 << 20
    r = verify(bytes(size), pattern="tagged", phys_addr=PHYS, generation=GEN, line_size=64)
    lines = size // 64
    assert r.bad_lines == lines == r.counts["stale"] == sum(r.counts.values())
    assert len(r.mismatches) == 4096 and r.reports_truncated
    d = r.to_dict()
    assert d["bad_lines"] == lines and d["counts"]["stale"] == lines
    assert d["reports_listed"] == len(d["mismatches"]) == 4096 and d["reports_truncated"] is True
    assert d["max_reports"] == 4096 and d["ok"] is False
    every = r.corrupted()
    assert len(every) == lines and every[-1] == (size - 64, "stale")
    assert [off for off, _ in every] == list(range(0, size, 64))


def test_a_list_that_holds_every_line_is_not_cut() -> None:
    buf = region("tagged")
    buf[64:72] = bytes(8)
    r = check(buf, "tagged")
    assert r.bad_lines == 1 and not r.reports_truncated and r.corrupted() == [(64, "stale")]
    assert r.to_dict()["reports_truncated"] is False
    clean = check(region("tagged"), "tagged").to_dict()
    assert clean["bad_lines"] == 0 and clean["reports_listed"] == 0
    assert clean["reports_truncated"] is False and clean["ok"] is True


@pytest.mark.parametrize("pattern", P.PATTERNS)
def test_counts_are_exact_across_chunks_whatever_is_listed(pattern: str) -> None:
    """Corrupted lines on both sides of the comparison's chunk boundaries, the classes
    summing to the bad-line count however short the list."""
    size = 3 * CHUNK + 4096
    cur = bytearray(P.generate(pattern, phys_addr=PHYS, size=size, generation=GEN,
                               seed=SEED).tobytes())  # fmt: skip
    old = P.generate(pattern, phys_addr=PHYS, size=size, generation=GEN - 5, seed=SEED).tobytes()
    stale = [0, CHUNK - 64, CHUNK, 2 * CHUNK + 640, size - 64]
    for off in stale:
        cur[off : off + 64] = old[off : off + 64]
    cur[CHUNK + 128 : CHUNK + 136] = b"\x42" * 8  # random
    want = {off: "stale" for off in stale} | {CHUNK + 128: "random"}
    for max_reports in (0, 2, 4096):
        r = verify(cur, pattern=pattern, phys_addr=PHYS, generation=GEN, seed=SEED,
                   line_size=64, max_reports=max_reports)  # fmt: skip
        assert r.bad_lines == len(want) == sum(r.counts.values())
        assert r.counts["stale"] == len(stale) and r.counts["random"] == 1
        assert dict(r.corrupted()) == want
        assert len(r.mismatches) == min(max_reports, len(want))
        assert r.reports_truncated == (max_reports < len(want))
        listed = [(m.phys_addr - PHYS, m.classification) for m in r.mismatches]
        assert listed == sorted(want.items())[:max_reports]
        assert all(m.generation == GEN - 5 for m in r.mismatches if m.classification == "stale")


def test_a_short_last_line_is_checked() -> None:
    """A region that is not a whole number of lines: its last, short line counts."""
    buf = region("walking-ones")[: SIZE - 40]
    buf[-8:] = bytes(8)
    r = verify(buf, pattern="walking-ones", phys_addr=PHYS, generation=GEN, line_size=64)
    assert r.lines_checked == SIZE // 64 and r.bad_lines == 1
    assert r.corrupted() == [(SIZE - 64, "stale")]


def test_a_line_size_that_is_not_whole_words_is_refused() -> None:
    from pagebuf.errors import InvalidRequestError

    for line in (-64, 12):
        with pytest.raises(InvalidRequestError) as err:
            verify(region("tagged"), pattern="tagged", phys_addr=PHYS, generation=GEN,
                   line_size=line)  # fmt: skip
        assert err.value.errno == 22


def test_value_0_is_the_word_0_and_the_default_changes_per_generation() -> None:
    """--value 0 once gave 0x5A5A5A5A5A5A5A01 (0 meant "the default")."""
    zero = P.generate("constant", phys_addr=0, size=64, generation=1, value=0)
    assert not zero.any()
    one, two = (P.generate("constant", phys_addr=0, size=8, generation=g)[0] for g in (1, 2))
    assert (int(one), int(two)) == (0x5A5A5A5A5A5A5A01, 0x5A5A5A5A5A5A5A02)
