"""The wire contract: round trips and every kind of malformed input -> SchemaError."""

from __future__ import annotations

import os

import msgpack
import numpy as np
import pytest

from duoscan.schemas import CODECS, Alert, DeadLetter, DecodeLimits, Frame, Region, Result, SchemaError, Timings


def make_frame(h: int = 6, w: int = 5, **kw) -> Frame:
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-0.1, 0.4, (h, w, 3)).astype(np.float32)
    xyz[0, 0] = 0.0
    defaults = dict(
        line="l1", station="s1", category="ring", rgb=rng.integers(0, 256, (h, w, 3), dtype=np.uint8), xyz=xyz
    )
    defaults.update(kw)
    return Frame(**defaults)


def mutate(payload: bytes, fn) -> bytes:
    obj = msgpack.unpackb(payload, raw=False)
    fn(obj)
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize("codec", CODECS)
def test_frame_round_trip_is_exact(codec):
    f = make_frame(meta={"lot": "A7"})
    g = Frame.decode(f.encode(codec=codec))
    assert (g.frame_id, g.line, g.station, g.category, g.meta) == (f.frame_id, f.line, f.station, f.category, f.meta)
    assert np.array_equal(g.rgb, f.rgb) and np.array_equal(g.xyz, f.xyz)
    assert g.xyz.dtype == np.float32


def test_float16_xyz_costs_bounded_precision():
    f = make_frame()
    g = Frame.decode(f.encode(xyz_float16=True))
    assert g.xyz.dtype == np.float32
    # float16 has 10 mantissa bits: relative error <= 2^-11.
    assert np.all(np.abs(g.xyz - f.xyz) <= np.abs(f.xyz) * 2.0**-11 + 1e-7)
    assert len(f.encode(codec="none", xyz_float16=True)) < len(f.encode(codec="none"))


def test_frame_round_trip_property():
    from hypothesis import given, settings  # imported here: 1 s that every xdist worker would pay at collection
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(
        h=st.integers(1, 24),
        w=st.integers(1, 24),
        codec=st.sampled_from(CODECS),
        meta=st.dictionaries(st.text(max_size=8), st.text(max_size=16), max_size=4),
        seed=st.integers(0, 2**32 - 1),
    )
    def round_trip(h, w, codec, meta, seed):
        rng = np.random.default_rng(seed)
        xyz = rng.standard_normal((h, w, 3)).astype(np.float32)
        f = make_frame(h, w, xyz=xyz, rgb=rng.integers(0, 256, (h, w, 3), dtype=np.uint8), meta=meta)
        g = Frame.decode(f.encode(codec=codec))
        assert np.array_equal(g.rgb, f.rgb) and np.array_equal(g.xyz, f.xyz) and g.meta == meta

    round_trip()


def _set(path, value):
    def fn(obj):
        target = obj
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value

    return fn


MALFORMED = {
    "wrong version": _set(["v"], 99),
    "wrong kind": _set(["kind"], "result"),
    "neither rgb nor xyz": lambda o: (o.pop("rgb"), o.pop("xyz")),
    "version 1 without rgb": lambda o: (o.pop("rgb"), o.update(v=1)),
    "rgb not an array map": _set(["rgb"], [1, 2, 3]),
    "string for int": _set(["captured_ns"], "yesterday"),
    "bool for int": _set(["captured_ns"], True),
    "bad dtype": _set(["rgb", "dtype"], "object"),
    "float64 dtype": _set(["xyz", "dtype"], "float64"),
    "unknown codec": _set(["rgb", "codec"], "gzip"),
    "dtype not a string": _set(["rgb", "dtype"], [117, 105, 110, 116, 56]),  # a flipped type byte: found by the fuzz
    "codec not a string": _set(["xyz", "codec"], [1]),
    "shape lie": _set(["rgb", "shape"], [6, 5, 4]),
    "absurd dims": _set(["rgb", "shape"], [10**6, 10**6, 3]),
    "negative dim": _set(["rgb", "shape"], [-6, -5, 3]),
    "2d rgb": _set(["rgb", "shape"], [30, 3]),
    "mismatched sizes": lambda o: o["xyz"].update(shape=[5, 6, 3]),
    "byte count lie": lambda o: o["xyz"].update(data=o["xyz"]["data"][:-4]),
    "rgb as float": lambda o: o["rgb"].update(dtype="float32", shape=[6, 5, 1]),
    "data not bytes": _set(["rgb", "data"], "abc"),
    "meta not strings": _set(["meta"], {"a": 1}),
    "bad line name": _set(["line"], "line one; DROP"),
    "bad frame id": _set(["frame_id"], ""),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_frames_raise_schema_error(name):
    payload = mutate(make_frame().encode(codec="none"), MALFORMED[name])
    with pytest.raises(SchemaError) as err:
        Frame.decode(payload)
    assert err.value.reason  # a human-readable reason travels to the DLQ


def test_nan_xyz_and_corrupt_compression_are_rejected():
    xyz = make_frame().xyz.copy()
    xyz[1, 1, 2] = np.nan
    with pytest.raises(SchemaError, match="NaN"):
        Frame.decode(mutate(make_frame().encode(codec="none"), lambda o: o["xyz"].update(data=xyz.tobytes())))
    with pytest.raises(SchemaError, match="zstd"):
        Frame.decode(
            mutate(make_frame().encode(codec="zstd"), lambda o: o["rgb"].update(data=b"\x28\xb5\x2f\xfd" + b"junk"))
        )
    with pytest.raises(SchemaError, match="lz4"):
        Frame.decode(mutate(make_frame().encode(codec="lz4"), lambda o: o["rgb"].update(data=b"\xff" * 7)))


def test_decompression_bomb_is_refused_before_allocation():
    big = Frame(
        line="l",
        station="s",
        category="c",
        rgb=np.zeros((2000, 2000, 3), np.uint8),
        xyz=np.zeros((2000, 2000, 3), np.float32),
    )
    payload = big.encode(codec="zstd")
    assert len(payload) < 100_000  # zeros compress to almost nothing...
    with pytest.raises(SchemaError, match="budget"):  # ...but the claimed size is checked first
        Frame.decode(payload, DecodeLimits(max_frame_bytes=1_000_000))


def test_garbage_and_ext_types_are_rejected():
    for junk in (b"", b"\xc1", b"\x92\x01\x02", b"random bytes \x00\xff" * 3, msgpack.packb(msgpack.ExtType(1, b"x"))):
        with pytest.raises(SchemaError):
            Frame.decode(junk)


def test_oversized_message_is_rejected_by_limit():
    payload = make_frame(64, 64).encode(codec="none")
    with pytest.raises(SchemaError, match="exceeds"):
        Frame.decode(payload, DecodeLimits(max_frame_bytes=len(payload) - 1))


def test_encode_refuses_invalid_frames():
    with pytest.raises(SchemaError, match="aligned"):
        make_frame(xyz=np.zeros((3, 3, 3), np.float32)).encode()
    with pytest.raises(SchemaError, match="uint8"):
        make_frame(rgb=np.zeros((6, 5, 3), np.float32)).encode()


def test_result_alert_dead_letter_round_trip():
    r = Result(
        frame_id="f1",
        line="l1",
        station="s1",
        category="ring",
        model="baseline",
        model_version="1",
        score=2.5,
        threshold=1.0,
        verdict="anomalous",
        heatmap_key="duoscan:heatmap:f1",
        modalities=["rgb", "xyz"],
        region=Region(12, (1, 2, 5, 6)),
        timings=Timings(1, 2, 3, 4, 5),
    )
    assert Result.decode(r.encode()) == r
    a = Alert.from_result(r)
    assert Alert.decode(a.encode()) == a and a.region == r.region
    d = DeadLetter(
        reason="bad", source_topic="frames.l1", source_partition=2, source_offset=9, frame_id="", payload=b"\x00\x01"
    )
    assert DeadLetter.decode(d.encode()) == d
    with pytest.raises(SchemaError):
        Result.decode(a.encode())  # an alert is not a result


def test_degraded_flag_round_trips_and_older_messages_still_decode():
    from duoscan.schemas._msgpack import pack

    r = Result(
        frame_id="f2",
        line="l1",
        station="s1",
        category="ring",
        model="cmdr",
        model_version="1",
        score=0.5,
        threshold=1.0,
        verdict="ok",
        heatmap_key="k",
        modalities=["rgb"],
        region=None,
        timings=Timings(1, 2, 3, 4, 5),
        degraded=True,
    )
    assert Result.decode(r.encode()).degraded is True
    assert Alert.decode(Alert.from_result(r).encode()).degraded is True
    old = r.to_dict()
    del old["degraded"]  # a sender from before the field existed
    assert Result.decode(pack(old)).degraded is False
    old["degraded"] = "yes"
    with pytest.raises(SchemaError):
        Result.decode(pack(old))


# The full suite fuzzes 10,000 frames; `make test-fast` sets 1,000 for a quick edit-test loop.
FUZZ_EXAMPLES = int(os.environ.get("DUOSCAN_FUZZ_EXAMPLES", "10000"))
_VALID = {codec: make_frame(8, 7).encode(codec=codec) for codec in CODECS}


def test_decoder_fuzz_only_ever_raises_schema_error():
    """10,000 corrupted frames (flipped bytes, truncation, appended junk, pure junk): decoding either
    yields a valid frame or raises SchemaError — never another exception — and stays within the budget."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True)
    @given(
        codec=st.sampled_from(sorted(_VALID)),
        edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
        cut=st.integers(0, 10_000),
        junk=st.binary(max_size=64),
    )
    def corrupted(codec, edits, cut, junk):
        data = bytearray(_VALID[codec])
        for pos, value in edits:
            data[pos % len(data)] = value
        candidates = [bytes(data), bytes(data[: cut % (len(data) + 1)]), bytes(data) + junk, junk]
        limits = DecodeLimits(max_frame_bytes=64 * 1024)
        for payload in candidates:
            try:
                frame = Frame.decode(payload, limits)
            except SchemaError as exc:
                assert exc.reason
            else:
                assert frame.modalities, "a frame always carries at least one input"
                assert frame.rgb is None or frame.xyz is None or frame.rgb.shape[:2] == frame.xyz.shape[:2]
                assert frame.xyz is None or np.isfinite(frame.xyz).all()
                assert sum(a.nbytes for a in (frame.rgb, frame.xyz) if a is not None) <= 64 * 1024

    corrupted()


@pytest.mark.parametrize("drop", ["rgb", "xyz"])
def test_a_frame_may_carry_one_input_only(drop):
    """Colour-only and 3D-only stations: version 2 frames carry either array alone."""
    full = make_frame(8, 7)
    one = Frame(
        line="L1",
        station="S1",
        category="c",
        rgb=None if drop == "rgb" else full.rgb,
        xyz=None if drop == "xyz" else full.xyz,
    )
    back = Frame.decode(one.encode(codec="zstd-delta"))
    kept = "xyz" if drop == "rgb" else "rgb"
    assert getattr(back, drop) is None and np.array_equal(getattr(back, kept), getattr(full, kept))
    assert back.modalities == (kept,) and back.shape == (8, 7)


def test_version_1_frames_still_decode():
    f = make_frame(6, 5)
    obj = msgpack.unpackb(f.encode(codec="none"), raw=False)
    obj["v"] = 1
    back = Frame.decode(msgpack.packb(obj, use_bin_type=True))
    assert back.modalities == ("rgb", "xyz") and np.array_equal(back.rgb, f.rgb)


@pytest.mark.parametrize("field, value", [("rgb", [[1, 2, 3]]), ("xyz", "points"), ("rgb", 3.0)])
def test_not_an_array_is_a_schema_error_naming_the_field(field, value):
    f = make_frame()
    setattr(f, field, value)
    with pytest.raises(SchemaError, match=f"frame: {field} must be a numpy array"):
        f.encode()
    both_none = Frame(line="L1", station="S1", category="c", rgb=None, xyz=None)
    with pytest.raises(SchemaError, match="neither rgb nor xyz"):
        both_none.encode()


def test_the_producer_refuses_a_frame_over_the_workers_decode_budget():
    """Zeros compress to almost nothing, so the message limit alone let through frames every worker dead-letters."""
    big = Frame(
        line="L1",
        station="S1",
        category="c",
        rgb=np.zeros((600, 600, 3), np.uint8),
        xyz=np.zeros((600, 600, 3), np.float32),
    )
    limits = DecodeLimits(max_frame_bytes=4_000_000)  # 600*600*15 = 5.4 MB decoded
    with pytest.raises(SchemaError, match="decode budget"):
        big.encode(codec="zstd", limits=limits)
    assert len(big.encode(codec="zstd")) < 100_000, "it would have fitted the message limit"
    small = big.encode(codec="zstd", xyz_float16=True, limits=DecodeLimits(max_frame_bytes=3_300_000))  # 1.08 + 2.16 MB
    with pytest.raises(SchemaError):
        Frame.decode(small, DecodeLimits(max_frame_bytes=3_200_000))


def test_the_demos_malformed_messages_are_all_refused():
    """The demo promises 3 dead letters; once a schema bump turned one of its 3 into a valid frame."""
    from duoscan.demo import malformed_payloads

    for bad in malformed_payloads(make_frame().encode()):
        with pytest.raises(SchemaError):
            Frame.decode(bad)
