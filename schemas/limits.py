"""Bounds that decoding enforces before it allocates anything."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class DecodeLimits:
    """What a decoder accepts. Every number caps an allocation.

    ``max_frame_bytes`` bounds both the encoded message and the decoded arrays
    together, so a small compressed message cannot claim a huge payload.
    """

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_side: int = 8192
    max_meta_items: int = 64
    max_text_len: int = 4096

    @classmethod
    def from_env(cls) -> DecodeLimits:
        return cls(max_frame_bytes=int(os.environ.get("DUOSCAN_MAX_FRAME_BYTES", DEFAULT_MAX_FRAME_BYTES)))
