"""Typed, frozen, versioned messages and their binary codec (no pickle).

A message is a frozen dataclass registered under a (type id, version) pair.
Frame layout, all little-endian::

    magic "SAGM" | u16 type id | u16 version | u32 body length | body

The body is the dataclass fields in declaration order. Supported field types:
``int`` (i64), ``bool``, ``float`` (f64), ``str`` (UTF-8), ``bytes``,
``numpy.ndarray`` (dtype code, ndim, shape, raw little-endian data), and
``tuple[X, ...]`` of those. The frame size limit is checked before anything is
parsed, and every length is checked against the bytes that remain before
anything is allocated. Unknown types/versions raise :class:`DecodeError`.

Type-id ranges: 0x00xx core, 0x01xx plaintext reference, 0x02xx masking,
0x03xx CKKS.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

import numpy as np

from secagg.errors import DecodeError, ParameterError

MAGIC = b"SAGM"
_HEADER = struct.Struct("<4sHHI")
DEFAULT_MAX_MESSAGE_BYTES = 1 << 31  # 2 GiB: a 10M-parameter CKKS upload fits
MAX_NDIM = 4
MAX_COUNT = 1 << 20  # items in a tuple field

_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<u1"),
    2: np.dtype("<u2"),
    3: np.dtype("<u4"),
    4: np.dtype("<u8"),
    5: np.dtype("<i1"),
    6: np.dtype("<i2"),
    7: np.dtype("<i4"),
    8: np.dtype("<i8"),
    9: np.dtype("<f4"),
    10: np.dtype("<f8"),
}
_DTYPE_CODES = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Message:
    """Base of every protocol message: who sends it to whom, in which session and round.

    ``session`` binds a message to one protocol run (key ceremony or round); a
    message from another session is a replay.
    """

    TYPE_ID: ClassVar[int] = 0
    VERSION: ClassVar[int] = 0

    session: bytes
    round: int
    sender: str
    recipient: str

    def __repr__(self) -> str:  # payloads may be secret-bearing or huge: never print them
        return (
            f"{type(self).__name__}(round={self.round}, sender={self.sender!r}, "
            f"recipient={self.recipient!r})"
        )


M = TypeVar("M", bound=type[Message])
_REGISTRY: dict[tuple[int, int], type[Message]] = {}
_CODECS: dict[type[Message], list[tuple[str, _FieldCodec]]] = {}


class _Reader:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise DecodeError(f"field length must fit in the frame; got {n} bytes past the end")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size))


_I64 = struct.Struct("<q")
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")
_U8 = struct.Struct("<B")


@dataclasses.dataclass(frozen=True)
class _FieldCodec:
    encode: Callable[[Any, list[bytes]], None]
    decode: Callable[[_Reader], Any]


def _enc_int(v: Any, out: list[bytes]) -> None:
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise ParameterError(f"int field must be an int; got {type(v).__name__}")
    out.append(_I64.pack(int(v)))


def _enc_bool(v: Any, out: list[bytes]) -> None:
    out.append(_U8.pack(1 if v else 0))


def _dec_bool(r: _Reader) -> bool:
    (b,) = r.unpack(_U8)
    if b not in (0, 1):
        raise DecodeError(f"bool field must be 0 or 1; got {b}")
    return bool(b)


def _enc_float(v: Any, out: list[bytes]) -> None:
    out.append(_F64.pack(float(v)))


def _enc_bytes(v: Any, out: list[bytes]) -> None:
    if not isinstance(v, bytes | bytearray):
        raise ParameterError(f"bytes field must be bytes; got {type(v).__name__}")
    out.append(_U32.pack(len(v)))
    out.append(bytes(v))


def _dec_bytes(r: _Reader) -> bytes:
    (n,) = r.unpack(_U32)
    return bytes(r.take(n))


def _enc_str(v: Any, out: list[bytes]) -> None:
    if not isinstance(v, str):
        raise ParameterError(f"str field must be a str; got {type(v).__name__}")
    _enc_bytes(v.encode("utf-8"), out)


def _dec_str(r: _Reader) -> str:
    try:
        return _dec_bytes(r).decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("str field must be valid UTF-8") from None


def _enc_array(v: Any, out: list[bytes]) -> None:
    if not isinstance(v, np.ndarray):
        raise ParameterError(f"array field must be a numpy array; got {type(v).__name__}")
    code = _DTYPE_CODES.get(v.dtype.newbyteorder("="))
    if code is None or v.ndim > MAX_NDIM:
        raise ParameterError(f"array must have a supported dtype and ndim ≤ {MAX_NDIM}")
    out.append(struct.pack("<BB", code, v.ndim))
    out.append(struct.pack(f"<{v.ndim}Q", *v.shape))
    out.append(np.ascontiguousarray(v, dtype=_DTYPES[code]).tobytes())


def _dec_array(r: _Reader) -> np.ndarray:
    code, ndim = r.unpack(struct.Struct("<BB"))
    if code not in _DTYPES:
        raise DecodeError(f"array dtype code must be known; got {code}")
    if ndim > MAX_NDIM:
        raise DecodeError(f"array ndim must be ≤ {MAX_NDIM}; got {ndim}")
    shape = r.unpack(struct.Struct(f"<{ndim}Q"))
    dtype = _DTYPES[code]
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dtype.itemsize
    if nbytes > len(r.data) - r.pos:
        raise DecodeError(f"array size must fit in the frame; got shape {shape}")
    arr = np.frombuffer(r.take(nbytes), dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    arr.flags.writeable = False
    return arr


_SCALARS: dict[Any, _FieldCodec] = {
    int: _FieldCodec(_enc_int, lambda r: r.unpack(_I64)[0]),
    bool: _FieldCodec(_enc_bool, _dec_bool),
    float: _FieldCodec(_enc_float, lambda r: r.unpack(_F64)[0]),
    bytes: _FieldCodec(_enc_bytes, _dec_bytes),
    str: _FieldCodec(_enc_str, _dec_str),
    np.ndarray: _FieldCodec(_enc_array, _dec_array),
}


def _tuple_codec(item: _FieldCodec) -> _FieldCodec:
    def enc(v: Any, out: list[bytes]) -> None:
        if not isinstance(v, tuple):
            raise ParameterError(f"tuple field must be a tuple; got {type(v).__name__}")
        out.append(_U32.pack(len(v)))
        for x in v:
            item.encode(x, out)

    def dec(r: _Reader) -> tuple[Any, ...]:
        (n,) = r.unpack(_U32)
        if n > MAX_COUNT or n > len(r.data) - r.pos:
            raise DecodeError(f"tuple length must fit in the frame; got {n}")
        return tuple(item.decode(r) for _ in range(n))

    return _FieldCodec(enc, dec)


def _codec_for(hint: Any) -> _FieldCodec:
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
        return _tuple_codec(_SCALARS[args[0]])
    if origin is types.UnionType or origin is typing.Union:
        raise ParameterError(f"message fields cannot be optional/unions; got {hint}")
    raise ParameterError(f"unsupported message field type {hint}")


def register(type_id: int, version: int = 1) -> Callable[[M], M]:
    """Class decorator: add a frozen Message subclass to the closed registry."""

    def wrap(cls: M) -> M:
        if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):  # type: ignore[attr-defined]
            raise ParameterError(f"{cls.__name__} must be a frozen dataclass")
        key = (type_id, version)
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ParameterError(f"message type id {type_id:#06x} v{version} is already taken")
        hints = typing.get_type_hints(cls)
        _CODECS[cls] = [(f.name, _codec_for(hints[f.name])) for f in dataclasses.fields(cls)]
        cls.TYPE_ID = type_id
        cls.VERSION = version
        # @dataclass regenerates __repr__ on every subclass, which would print
        # payloads (shares, ciphertexts, plaintext vectors): force the safe one.
        cls.__repr__ = Message.__repr__  # type: ignore[method-assign]
        _REGISTRY[key] = cls
        return cls

    return wrap


def encode(msg: Message) -> bytes:
    """Serialize a registered message into one frame."""
    codecs = _CODECS.get(type(msg))
    if codecs is None:
        raise ParameterError(f"message type must be registered; got {type(msg).__name__}")
    parts: list[bytes] = []
    for name, codec in codecs:
        codec.encode(getattr(msg, name), parts)
    body = b"".join(parts)
    return _HEADER.pack(MAGIC, msg.TYPE_ID, msg.VERSION, len(body)) + body


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Parse one frame into its registered message type.

    Raises:
        DecodeError: oversized, truncated, trailing bytes, bad magic, unknown
            type/version, or any malformed field.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"frame must be bytes; got {type(data).__name__}")
    if len(data) > max_size:
        raise DecodeError(f"frame must be at most {max_size} bytes; got {len(data)}")
    if len(data) < _HEADER.size:
        raise DecodeError(f"frame must be at least {_HEADER.size} bytes; got {len(data)}")
    view = memoryview(bytes(data) if not isinstance(data, bytes) else data)
    magic, type_id, version, length = _HEADER.unpack(view[: _HEADER.size])
    if magic != MAGIC:
        raise DecodeError("frame must start with the secagg magic")
    if length != len(view) - _HEADER.size:
        raise DecodeError(
            f"body length must match the frame; got {length} declared, "
            f"{len(view) - _HEADER.size} present"
        )
    cls = _REGISTRY.get((type_id, version))
    if cls is None:
        raise DecodeError(f"message type must be known; got type {type_id:#06x} version {version}")
    reader = _Reader(view[_HEADER.size :])
    try:
        values = {name: codec.decode(reader) for name, codec in _CODECS[cls]}
    except (struct.error, ValueError, OverflowError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"{cls.__name__} body must be well formed") from None
    if reader.pos != len(reader.data):
        raise DecodeError(f"{cls.__name__} body must have no trailing bytes")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"{cls.__name__} fields must be valid") from None


def registered_types() -> dict[tuple[int, int], type[Message]]:
    """A copy of the closed registry (type id, version) → class."""
    return dict(_REGISTRY)


def digest(frames: Iterable[bytes], *, label: str) -> bytes:
    """SHA-256 over a length-prefixed, domain-separated sequence of frames."""
    h = hashlib.sha256(f"secagg/digest/{label}\x00".encode())
    for frame in frames:
        h.update(len(frame).to_bytes(8, "little"))
        h.update(frame)
    return h.digest()
