"""The wire contract: versioned, validated msgpack messages. No pickle, no ext types."""

from .arrays import ALLOWED_DTYPES, CODECS, decode_array, encode_array
from .errors import SchemaError
from .frame import FRAME_SCHEMA_VERSION, Frame, is_name, new_frame_id, peek_frame_id
from .limits import DecodeLimits
from .messages import MESSAGE_SCHEMA_VERSION, Alert, DeadLetter, Region, Result, Timings

__all__ = [
    "ALLOWED_DTYPES",
    "CODECS",
    "FRAME_SCHEMA_VERSION",
    "MESSAGE_SCHEMA_VERSION",
    "Alert",
    "DeadLetter",
    "DecodeLimits",
    "Frame",
    "is_name",
    "Region",
    "Result",
    "SchemaError",
    "Timings",
    "decode_array",
    "encode_array",
    "new_frame_id",
    "peek_frame_id",
]
