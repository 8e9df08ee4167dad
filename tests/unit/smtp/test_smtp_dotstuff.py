"""DATA and BDAT framing: end marker, dot-unstuffing, bare CR/LF, NUL, line length, size.

The chunked readers are checked against a slow, obviously-correct model written from the RFC
text, for every split of the input.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcase.smtp.dotstuff import ChunkReader, DataReader, DataResult

POLICIES = ("reject", "normalize")


# --- a slow model ------------------------------------------------------------------------------


def _normalize(b: bytes) -> bytes:
    return b.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def model_content(unstuffed: bytes, max_size: int, max_line: int, policy: str) -> tuple:
    crlf = unstuffed.count(b"\r\n")
    bare = unstuffed.count(b"\n") != crlf or unstuffed.count(b"\r") != crlf
    stored = _normalize(unstuffed) if policy == "normalize" and bare else unstuffed
    lines = stored.split(b"\n")
    too_long = max_line > 0 and (
        any(len(x) + 1 > max_line for x in lines[:-1]) or len(lines[-1]) >= max_line
    )
    too_big = len(stored) > max_size
    return (b"" if too_big else stored, len(stored), bare, b"\0" in stored, too_long, too_big)


def model_data(data: bytes, max_size: int, max_line: int, policy: str) -> tuple | None:
    """RFC 5321 §4.1.1.4 / §4.5.2 literally: the stream begins after the DATA line's CRLF."""
    stream = b"\r\n" + data
    end = stream.find(b"\r\n.\r\n")
    if end < 0:
        return None
    body = data[:end]  # up to and including the CRLF before the final dot
    unstuffed = (b"\r\n" + body).replace(b"\r\n.", b"\r\n")[2:]
    return (*model_content(unstuffed, max_size, max_line, policy), stream[end + 5 :])


def as_tuple(r: DataResult) -> tuple:
    return (
        bytes(r.content),
        r.size,
        r.bare_newline_seen,
        r.nul_seen,
        r.line_too_long,
        r.too_big,
        r.leftover,
    )


def feed_split(data: bytes, cuts: list[int], **kw) -> tuple | None:
    reader = DataReader(**kw)
    prev = 0
    for cut in [*cuts, len(data)]:
        reader.feed(data[prev:cut])
        prev = cut
    return as_tuple(reader.result) if reader.done else None


# --- examples ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content", "leftover"),
    [
        (b".\r\n", b"", b""),
        (b".\r\nQUIT\r\n", b"", b"QUIT\r\n"),
        (b"a\r\n.\r\n", b"a\r\n", b""),
        (b"..\r\n.\r\n", b".\r\n", b""),
        (b"..a\r\n...b\r\n.\r\n", b".a\r\n..b\r\n", b""),
        (b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n", b""),
        (b"a\r\n.b\r\n.\r\nNOOP\r\nQUIT\r\n", b"a\r\nb\r\n", b"NOOP\r\nQUIT\r\n"),
        (b"\r\n.\r\n", b"\r\n", b""),
    ],
)
def test_examples(data, content, leftover):
    for cuts in ([], list(range(1, len(data)))):
        r = feed_split(data, cuts, max_size=1000)
        assert r is not None
        assert r[0] == content and r[-1] == leftover
        assert r[2:6] == (False, False, False, False)


@pytest.mark.parametrize(
    "data",
    [b"", b".", b".\r", b"a\r\n", b"a\r\n.", b"a\r\n.\r", b"a\n.\n", b"a\r.\r", b"a\r\n.\n"],
)
def test_not_ended(data):
    assert feed_split(data, [], max_size=1000) is None


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    ("data", "bare", "normalized"),
    [
        (b"a\nb\r\n.\r\n", True, b"a\r\nb\r\n"),
        (b"a\rb\r\n.\r\n", True, b"a\r\nb\r\n"),
        (b"a\r\rb\r\n.\r\n", True, b"a\r\n\r\nb\r\n"),
        (b"\n.\r\n", True, b"\r\n.\r\n"),  # not an end, and not unstuffed (bare LF line)
        (b"a\r\n.\n\r\n.\r\n", True, b"a\r\n\r\n\r\n"),  # "\r\n.\n": dot dropped, LF bare
        (b"a\r\nb\r\n.\r\n", False, b"a\r\nb\r\n"),
    ],
)
def test_bare_newlines(policy, data, bare, normalized):
    if data == b"\n.\r\n":
        data += b"x\r\n.\r\n"
        normalized += b"x\r\n"
    for cuts in ([], list(range(1, len(data)))):
        r = feed_split(data, cuts, max_size=1000, bare_newline=policy)
        assert r is not None
        assert r[2] is bare
        if policy == "normalize":
            assert r[0] == normalized


def test_bare_cr_across_a_chunk_boundary_is_not_bare():
    r = DataReader(max_size=100)
    for part in (b"a\r", b"\nb\r", b"\n.\r", b"\n"):
        r.feed(part)
    assert r.done
    assert bytes(r.result.content) == b"a\r\nb\r\n"
    assert not r.result.bare_newline_seen


def test_nul_and_line_length():
    r = feed_split(b"a\x00b\r\n.\r\n", [], max_size=100)
    assert r is not None and r[3] is True
    # With a limit of 1000 octets including CRLF (RFC 5321 §4.5.3.1.6) …
    strict = {"max_size": 10_000, "max_line": 1000}
    ok = b"x" * 998 + b"\r\n"
    assert feed_split(ok + b".\r\n", [], **strict)[4] is False  # type: ignore[index]
    # … not counting the transparency dot.
    dotted = b"." + ok
    assert feed_split(dotted + b".\r\n", [500], **strict)[4] is False  # type: ignore[index]
    long = b"x" * 999 + b"\r\n"
    assert feed_split(long + b".\r\n", [], **strict)[4] is True  # type: ignore[index]
    assert feed_split(b"a\r\n" * 5 + long + b".\r\n", [7, 600], **strict)[4] is True  # type: ignore[index]


def test_no_line_limit_by_default_and_content_kept_byte_exact():
    """Issue 10: long lines (broken web forms, old clients) are accepted and stored as sent."""
    body = b"a\r\n" + b"x" * 5000 + b"\r\n" + b"." + b"y" * 70_000 + b"\r\nend\r\n"
    r = feed_split(body + b".\r\n", [3, 4000, 5005, 30_000], max_size=100_000)
    assert r is not None and r[4] is False and r[2] is False
    assert r[0] == body.replace(b"\r\n.", b"\r\n")  # only the transparency dot removed
    c = ChunkReader(max_size=100_000)
    c.begin(len(body))
    assert c.feed(body) == b"" and not c.refused
    res = c.finish()
    assert bytes(res.content) == body and not res.line_too_long


def test_too_big_keeps_scanning_but_stops_storing():
    r = DataReader(max_size=1000)
    for _ in range(100):
        r.feed(b"x" * 98 + b"\r\n")
        assert len(r._sink.content) <= 1000
    r.feed(b".\r\nQUIT\r\n")
    assert r.done
    res = r.result
    assert res.too_big and res.size == 10_000 and res.content == bytearray()
    assert res.leftover == b"QUIT\r\n"


def test_content_is_one_bytearray_not_copied_at_the_end():
    r = DataReader(max_size=1000)
    r.feed(b"abc\r\n")
    buf = r._sink.content
    r.feed(b".\r\n")
    assert r.result.content is buf


def test_bytes_after_the_end_are_leftover():
    r = DataReader(max_size=100)
    r.feed(b"a\r\n.\r\nNO")
    r.feed(b"OP\r\n")
    assert r.result.leftover == b"NOOP\r\n"


# --- every split gives the same result ---------------------------------------------------------

SAMPLES = [
    b"Subject: x\r\n\r\n..a\r\n.b\r\n\r\n.\r\nQUIT\r\n",
    b"a\r\n.\n.\r\r.\r\n\x00\r\n..\r\n.\r\nX",
    b"\r\r\n\n\r\n.\r\n",
    b".\r\n",
    b"x" * 20 + b"\r\n" + b"y" * 5 + b"\r\n.\r\n",
]


@pytest.mark.parametrize("data", SAMPLES)
@pytest.mark.parametrize("policy", POLICIES)
def test_every_two_and_byte_by_byte_split(data, policy):
    kw = {"max_size": 15, "max_line": 10, "bare_newline": policy}
    whole = feed_split(data, [], **kw)
    assert whole == model_data(data, 15, 10, policy)
    assert feed_split(data, list(range(1, len(data))), **kw) == whole
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            assert feed_split(data, [i, j], **kw) == whole, (i, j)


_ALPHABET = [b"\r", b"\n", b".", b"a", b"\x00", b"\r\n", b"\r\n.", b"\r\n.\r\n", b"\r\n..", b"b"]

fragments = st.lists(st.sampled_from(_ALPHABET), max_size=40).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(
    data=fragments,
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
    max_size=st.integers(min_value=0, max_value=40),
    max_line=st.one_of(st.just(0), st.integers(min_value=2, max_value=12)),  # 0: no limit
    policy=st.sampled_from(POLICIES),
)
def test_data_reader_matches_model_for_any_chunking(data, cuts, max_size, max_line, policy):
    cuts = sorted(min(c, len(data)) for c in cuts)
    got = feed_split(data, cuts, max_size=max_size, max_line=max_line, bare_newline=policy)
    assert got == model_data(data, max_size, max_line, policy)


@pytest.mark.parametrize("max_cuts", [0, 1, 2])
@settings(max_examples=200, deadline=None)
@given(
    data=fragments,
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
    max_line=st.one_of(st.just(0), st.integers(min_value=2, max_value=12)),  # 0: no limit
    policy=st.sampled_from(POLICIES),
)
def test_many_dot_lines_path_matches_model(max_cuts, data, cuts, max_line, policy):
    # Above _MAX_CUTS dot-lines per chunk the reader switches to bytes.replace; force it.
    import mailcase.smtp.dotstuff as dotstuff

    saved = dotstuff._MAX_CUTS
    dotstuff._MAX_CUTS = max_cuts
    try:
        cuts = sorted(min(c, len(data)) for c in cuts)
        got = feed_split(data, cuts, max_size=30, max_line=max_line, bare_newline=policy)
    finally:
        dotstuff._MAX_CUTS = saved
    assert got == model_data(data, 30, max_line, policy)


@settings(max_examples=300, deadline=None)
@given(
    data=fragments,
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
    max_size=st.integers(min_value=0, max_value=40),
    max_line=st.one_of(st.just(0), st.integers(min_value=2, max_value=12)),  # 0: no limit
    policy=st.sampled_from(POLICIES),
)
def test_chunk_reader_matches_model_for_any_chunking(data, cuts, max_size, max_line, policy):
    cuts = sorted(min(c, len(data)) for c in cuts)
    reader = ChunkReader(max_size=max_size, max_line=max_line, bare_newline=policy)
    # The cuts serve both as BDAT chunk boundaries and as receive boundaries.
    prev = 0
    for cut in [*cuts, len(data)]:
        reader.begin(cut - prev)
        assert reader.feed(data[prev:cut] + b"NEXT") == b"NEXT"
        assert reader.chunk_complete
        prev = cut
    r = reader.finish()
    got = (bytes(r.content), r.size, r.bare_newline_seen, r.nul_seen, r.line_too_long, r.too_big)
    assert got == model_content(data, max_size, max_line, policy)


def test_chunk_reader_counts_and_discard():
    reader = ChunkReader(max_size=100)
    reader.begin(5)
    assert reader.remaining == 5
    assert reader.feed(b"ab") == b""
    assert reader.remaining == 3
    assert reader.feed(b"c\r\nBDAT") == b"BDAT"
    assert reader.chunk_complete
    reader.begin(3, discard=True)
    assert reader.feed(b"xyz") == b""
    assert bytes(reader.finish().content) == b"abc\r\n"
    with pytest.raises(ValueError):
        reader.begin(-1)
