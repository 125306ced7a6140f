"""The codec: round trips, and every malformed frame is a DecodeError (threat: a
peer or network attacker sending crafted bytes to crash or confuse a role)."""

import dataclasses
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from secagg.errors import DecodeError, ParameterError
from secagg.wire import Message, decode, digest, encode, register


@register(0x00F0)
@dataclasses.dataclass(frozen=True, kw_only=True)
class _Sample(Message):
    count: int
    ratio: float
    flag: bool
    label: str
    blob: bytes
    values: np.ndarray
    names: tuple[str, ...]
    blobs: tuple[bytes, ...]


def _sample(values=None, **kw):
    base = dict(
        session=b"s" * 16,
        round=3,
        sender="client/1",
        recipient="server",
        count=-7,
        ratio=0.25,
        flag=True,
        label="héllo",
        blob=b"\x00\x01",
        values=np.arange(5, dtype=np.uint32) if values is None else values,
        names=("a", "b"),
        blobs=(b"x", b""),
    )
    base.update(kw)
    return _Sample(**base)


def _assert_same(a, b):
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
        else:
            assert x == y


_DTYPES = st.sampled_from(["<u1", "<u4", "<u8", "<i8", "<f4", "<f8"])


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=20),
    st.binary(max_size=40),
)
def test_round_trip(values, count, label, blob):
    msg = _sample(values=values, count=count, label=label, blob=blob)
    back = decode(encode(msg))
    assert type(back) is _Sample
    _assert_same(msg, back)
    assert not back.values.flags.writeable


def test_known_answer_header():
    frame = encode(_sample())
    magic, type_id, version, length = struct.unpack("<4sHHI", frame[:12])
    assert (magic, type_id, version, length) == (b"SAGM", 0x00F0, 1, len(frame) - 12)


def test_every_truncation_is_a_decode_error():
    frame = encode(_sample())
    for cut in range(len(frame)):
        with pytest.raises(DecodeError):
            decode(frame[:cut])


def test_trailing_bytes_rejected():
    frame = encode(_sample())
    bad = frame[:8] + struct.pack("<I", len(frame) - 12 + 1) + frame[12:] + b"\x00"
    with pytest.raises(DecodeError):
        decode(bad)


def test_oversized_rejected_before_parsing():
    frame = encode(_sample(values=np.zeros(1000)))
    with pytest.raises(DecodeError, match="at most"):
        decode(frame, max_size=len(frame) - 1)


def test_unknown_type_and_version_rejected():
    frame = encode(_sample())
    for type_id, version in [(0x7777, 1), (0x00F0, 2)]:
        bad = frame[:4] + struct.pack("<HH", type_id, version) + frame[8:]
        with pytest.raises(DecodeError, match="must be known"):
            decode(bad)


def test_array_shape_lying_about_size_rejected():
    msg = _sample(values=np.zeros(4, dtype=np.uint8))
    frame = bytearray(encode(msg))
    # the first shape word follows the dtype/ndim bytes of the array field
    pos = frame.index(struct.pack("<BBQ", 1, 1, 4))
    frame[pos + 2 : pos + 10] = struct.pack("<Q", 2**40)
    with pytest.raises(DecodeError):
        decode(bytes(frame))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_a_decode_error(data):
    with pytest.raises(DecodeError):
        decode(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_bit_flips_never_crash(data):
    frame = bytearray(encode(_sample()))
    i = data.draw(st.integers(0, len(frame) - 1))
    frame[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        decode(bytes(frame))
    except DecodeError:
        pass  # a decoded-but-different message is fine: authenticity is the AEAD's job


def test_bad_utf8_and_bool_rejected():
    frame = bytearray(encode(_sample(label="ab")))
    pos = frame.index(b"ab")
    frame[pos] = 0xFF
    with pytest.raises(DecodeError, match="UTF-8"):
        decode(bytes(frame))


def test_unregistered_and_unsupported_types_refused():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Loose(Message):
        x: int

    with pytest.raises(ParameterError):
        encode(Loose(session=b"", round=0, sender="a", recipient="b", x=1))
    with pytest.raises(ParameterError):

        @register(0x00F1)
        @dataclasses.dataclass(frozen=True, kw_only=True)
        class Bad(Message):
            x: dict


def test_duplicate_type_id_refused():
    with pytest.raises(ParameterError, match="already taken"):

        @register(0x00F0)
        @dataclasses.dataclass(frozen=True, kw_only=True)
        class Other(Message):
            y: int


def test_repr_hides_payload():
    assert "héllo" not in repr(_sample()) and "values" not in repr(_sample())


def test_digest_is_order_and_boundary_sensitive():
    assert digest([b"ab", b"c"], label="t") != digest([b"a", b"bc"], label="t")
    assert digest([b"a", b"b"], label="t") != digest([b"b", b"a"], label="t")
    assert digest([b"a"], label="t") != digest([b"a"], label="u")
