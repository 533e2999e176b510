"""Faults on the pack/train side (issue 12), the tar shard reader: hostile headers, pax records and cut
shards are refused with CorruptShard naming the shard, and a fuzz of it never loops or over-reads."""

import io
import random
import tarfile
import time

import pytest

from storage.shards import CorruptShard, count_samples, tar_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- item 12: the shard reader's guards, and a fuzz of it --------------------------------------------------


def header(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> bytearray:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return bytearray(info.tobuf(tarfile.USTAR_FORMAT))


def set_field(block: bytearray, start: int, end: int, value: bytes) -> bytearray:
    """Set a header field (padded with NULs) and make the checksum right again, so the value is what counts."""
    block[start:end] = value[: end - start].ljust(end - start, b"\0")
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return block


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def shard_of(*parts: bytes) -> bytes:
    return b"".join(parts) + bytes(1024)


def with_pax(records: bytes) -> bytes:
    """A pax extended header holding `records` as given, then a regular member and the end blocks."""
    pax = set_field(header("PaxHeader/a.json", kind=tarfile.XHDTYPE), 124, 136, b"%011o" % len(records))
    return shard_of(bytes(pax), padded(records), bytes(header("a.json", 2)), padded(b"{}"))


def read_all(path) -> list[dict]:
    samples = list(tar_samples(str(path)))
    count_samples(str(path))
    return samples


@pytest.mark.timeout(30)
@pytest.mark.parametrize("size_field", [b"-0000001", b"-1", b"\xff" * 12, b"\xff" + b"\xff" * 10 + b"\xfe"])
def test_a_negative_size_is_refused(tmp_path, size_field):
    path = tmp_path / "s.tar"
    member = set_field(header("a.audio.npy"), 124, 136, size_field)
    path.write_bytes(shard_of(bytes(header("a.json", 2)), padded(b"{}"), bytes(member), padded(b"x" * 600)))
    with pytest.raises(CorruptShard, match=f"{path}.*negative size"):
        read_all(path)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "records",
    [
        b"0 size=5\n",
        b"00 path=b.json\n",
        b"3 path=b.json\n",
        b"-5 size=1\n",
        b"99999999 path=b.json\n",
        b"12 size=-100\n",
        b"10 path=\xff\xfe\n",
        b"x\n",
    ],
)
def test_a_bad_pax_record_is_refused_without_looping(tmp_path, records):
    path = tmp_path / "s.tar"
    path.write_bytes(with_pax(records))
    with pytest.raises(CorruptShard, match=str(path)):
        read_all(path)


def fuzz_cases(good: bytes, rng: random.Random):
    """Cut at every 16th byte; random bytes overwritten; header fields set to hostile values (checksum fixed
    up); random files."""
    for cut in range(0, len(good), 16):
        yield good[:cut]
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        yield bytes(data)
    headers = [i for i in range(0, len(good) - 511, 512) if good[i + 257 : i + 262] == b"ustar"]
    hostile = [
        b"-1",
        b"-777777",
        b"\xff" * 12,
        b"\x80" + b"\xff" * 11,
        b"77777777777",
        b"1e5",
        b"",
        b"\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01",
    ]
    fields = [(0, 100), (100, 108), (124, 136), (136, 148), (156, 157), (257, 263), (345, 500)]
    for _ in range(300):
        data = bytearray(good)
        at = rng.choice(headers)
        start, end = rng.choice(fields)
        value = rng.choice(hostile + [bytes(rng.randrange(256) for _ in range(end - start))])
        data[at : at + 512] = set_field(bytearray(data[at : at + 512]), start, end, value)
        yield bytes(data)
    for _ in range(50):
        yield bytes(rng.randrange(256) for _ in range(rng.choice([0, 100, 512, 1024, 3000])))


@pytest.mark.timeout(60)
def test_fuzzed_shards_give_samples_or_corrupt_shard_in_seconds(tmp_path):
    source = tmp_path / "good.tar"
    with tarfile.open(source, "w", format=tarfile.PAX_FORMAT) as tar:  # pax: long and non-ASCII names
        for name, data in [
            ("a.json", b'{"k": 1}'),
            ("a.audio.npy", b"a" * 700),
            ("d/" + "k" * 120 + ".json", b"[]"),
            ("b.ünï.json", b"2"),
            ("c.text.npy", b"t" * 1500),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    good = source.read_bytes()
    assert len(read_all(source)) == 4
    started, path, outcomes = time.perf_counter(), tmp_path / "fuzz.tar", {"read": 0, "refused": 0}
    for data in fuzz_cases(good, random.Random(12)):
        path.write_bytes(data)
        try:
            samples = read_all(path)
        except CorruptShard as err:
            assert str(path) in str(err)
            outcomes["refused"] += 1
            continue
        outcomes["read"] += 1
        assert sum(len(v) for s in samples for v in s.values() if isinstance(v, bytes)) <= len(data)
    assert outcomes["read"] and outcomes["refused"]
    assert time.perf_counter() - started < 20


def test_a_shard_cut_at_any_member_boundary_is_refused(tmp_path):
    path = tmp_path / "s.tar"
    good = shard_of(bytes(header("a.json", 2)), padded(b"{}"), bytes(header("a.audio.npy", 3)), padded(b"xyz"))
    for cut in (512 * 2, 512 * 4):  # after the first member; after the second, before the end blocks
        path.write_bytes(good[:cut])
        with pytest.raises(CorruptShard, match="end-of-archive"):
            read_all(path)
