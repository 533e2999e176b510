"""Streaming packed shards: batch format, padding and masks, no pickle, equal per-rank epochs, resumable order,
the shard reader (webdataset's samples, damaged shards refused), batches through workers."""

import io
import json
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch

from storage import shards
from storage.packinfo import read_pack
from storage.shards import CorruptShard
from tests.pack_helpers import DIMS, write_pack
from trainers import transport
from trainers.batches import BatchSpec, choose_modalities, to_device
from trainers.data import (
    InMemorySplit,
    TrainLoader,
    TrainStream,
    _tar_samples,
    batches_per_epoch,
    eval_loader,
    shard_sizes,
    train_loader,
)
from trainers.transport import pack_batch, unpack_batch


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return read_pack(write_pack(tmp_path_factory.mktemp("data") / "pack"))


def spec_for(info, modalities=None, max_len=None):
    return BatchSpec.for_pack(info, choose_modalities(info, modalities), max_len)


def ids(batches) -> list[str]:
    return [sid for batch in batches for sid in batch["sample_id"]]


def test_read_pack_and_modalities(pack, tmp_path):
    assert pack.task == "classification" and pack.num_outputs == 3 and pack.dims == DIMS
    assert pack.count("train") == 40 and len(pack.urls("train")) == 3
    assert choose_modalities(pack, ["video", "audio"]) == ["audio", "video"]
    with pytest.raises(ValueError, match="no features for"):
        choose_modalities(read_pack(write_pack(tmp_path / "p", dims={"text": 4})), ["audio"])
    with pytest.raises(FileNotFoundError, match="pack.json"):
        read_pack(tmp_path)


def test_batch_format_padding_and_missing(pack):
    spec = spec_for(pack)
    batch = next(iter(eval_loader(pack, spec, "valid", batch_size=6)))
    assert sorted(batch["features"]) == ["audio", "text", "video"]
    assert batch["present"].shape == (6, 3) and batch["present"].dtype == torch.bool
    assert batch["target"].dtype == torch.long and len(batch["sample_id"]) == 6
    for i, m in enumerate(spec.modalities):
        x, valid = batch["features"][m], batch["mask"][m]
        assert x.dtype == torch.float16 and x.shape[:2] == valid.shape and x.shape[2] == DIMS[m]  # as stored
        assert (x[~valid] == 0).all()  # padding is zeros
        assert torch.equal(valid.any(1), batch["present"][:, i])  # missing: no real step
        assert valid.sum(1).max() == x.shape[1]  # padded to the batch's longest
    on_device = to_device(batch, torch.device("cpu"))
    assert all(x.dtype == torch.float32 for x in on_device["features"].values())


def test_max_len_and_modality_subset(pack):
    batch = next(iter(eval_loader(pack, spec_for(pack, ["audio", "text"], {"audio": 2}), "train", batch_size=8)))
    assert sorted(batch["features"]) == ["audio", "text"] and batch["present"].shape == (8, 2)
    assert batch["features"]["audio"].shape[1] <= 2


def test_regression_targets_are_float(tmp_path):
    info = read_pack(write_pack(tmp_path / "reg", task="regression"))
    batch = next(iter(eval_loader(info, spec_for(info), "test", batch_size=4)))
    assert batch["target"].dtype == torch.float32 and info.num_outputs == 1


def test_pickled_arrays_are_refused(tmp_path):
    root = write_pack(tmp_path / "p", counts={"train": 2, "valid": 1, "test": 2})
    shard = root / "valid-000000.tar"
    evil = io.BytesIO()
    np.save(evil, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with tarfile.open(shard, "w") as tar:
        for name, data in [
            ("s1.audio.npy", evil.getvalue()),
            (
                "s1.json",
                json.dumps(
                    {"sample_id": "s1", "split": "valid", "label": "c0", "target": 0, "present": {"audio": True}}
                ).encode(),
            ),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    info = read_pack(root)
    with pytest.raises(ValueError, match="allow_pickle"):
        list(eval_loader(info, spec_for(info), "valid", batch_size=2))


def test_eval_order_is_complete_and_deterministic(pack):
    spec = spec_for(pack)
    first = ids(eval_loader(pack, spec, "train", batch_size=7, num_workers=2))
    assert sorted(first) == [f"train_{i:05d}" for i in range(40)]
    assert ids(eval_loader(pack, spec, "train", batch_size=7, num_workers=2)) == first


def test_train_epoch_sees_every_sample_once_and_depends_on_seed_and_epoch(pack):
    def epoch(seed, n):
        return train_loader(pack, spec_for(pack), batch_size=8, shuffle_buffer=16, seed=seed, epoch=n, num_workers=2)

    loader = epoch(0, 1)
    batches = list(loader)
    assert len(batches) == len(loader) == 5 and all(len(b["sample_id"]) == 8 for b in batches)
    assert sorted(ids(batches)) == [f"train_{i:05d}" for i in range(40)]
    assert ids(epoch(0, 1)) == ids(batches)  # a resumed epoch reads the same stream
    assert ids(epoch(0, 2)) != ids(batches) and ids(epoch(1, 1)) != ids(batches)


@pytest.mark.parametrize("shard_size", [40, 8])  # one shard for all streams / enough shards to deal out
def test_ranks_get_equal_batches_and_share_the_data(tmp_path, shard_size):
    info = read_pack(write_pack(tmp_path / "p", counts={"train": 40, "valid": 4, "test": 4}, shard_size=shard_size))
    world, batch_size = 2, 4
    n = batches_per_epoch(40, world, batch_size)
    seen = []
    for rank in range(world):
        stream = TrainStream(
            info.urls("train"),
            spec_for(info),
            batches=n,
            batch_size=batch_size,
            shuffle_buffer=8,
            seed=3,
            epoch=1,
            rank=rank,
        )
        batches = list(stream)
        assert len(batches) == n == 5
        seen += ids(batches)
    assert Counter(seen) == Counter(f"train_{i:05d}" for i in range(40))


def test_in_memory_split_matches_stream(pack):
    spec = spec_for(pack)
    memory = InMemorySplit(pack, spec, "valid")
    assert len(memory) == 12
    streamed = next(iter(eval_loader(pack, spec, "valid", batch_size=12)))
    batch = next(memory.batches(12))
    assert batch["sample_id"] == streamed["sample_id"]
    for m in spec.modalities:
        assert torch.equal(batch["features"][m], streamed["features"][m])
        assert torch.equal(batch["mask"][m], streamed["mask"][m])
    shuffled = list(memory.batches(5, shuffle=True, seed=1, drop_last=True))
    assert [len(b["sample_id"]) for b in shuffled] == [5, 5]
    for b in shuffled:  # each batch trimmed to its own longest sample
        assert all(
            b["mask"][m].sum(1).max() == b["mask"][m].shape[1] or not b["mask"][m].any() for m in spec.modalities
        )


# ---- the shard reader ---------------------------------------------------------------------------------


def tar_of(path, members, fmt=tarfile.PAX_FORMAT):
    """A tar of (name, bytes) regular files, or (name, TarInfo type) for other member kinds."""
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, bytes):
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type, info.linkname = data, "elsewhere"
                tar.addfile(info)
    return str(path)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reader_groups_samples_as_webdataset_does(tmp_path, fmt):
    import webdataset as wds

    long_key = "dir/" + "k" * 120 if fmt != tarfile.USTAR_FORMAT else "dir/" + "k" * 90  # ustar: prefix + name
    members = [
        ("a.json", b"{}"),
        ("a.Audio.NPY", b"xyz"),
        ("dir", tarfile.DIRTYPE),
        ("a.link", tarfile.SYMTYPE),
        (f"{long_key}.json", b"[1]"),
        (f"{long_key}.text.npy", b"t" * 700),
        ("__index__", b"meta"),
        ("b.ünï.json", b"2"),
        ("noext", b"skipped"),
    ]
    path = tar_of(tmp_path / "s.tar", members, fmt)
    ours = list(_tar_samples([path]))
    theirs = list(wds.tarfile_to_samples()(iter([{"url": path}])))
    assert ours == theirs
    assert [s["__key__"] for s in ours] == ["a", long_key, "b"] and ours[0]["audio.npy"] == b"xyz"
    assert shard_sizes((path,)) == (3,)


def test_reader_reads_a_pack_like_webdataset(pack):
    import webdataset as wds

    urls = pack.urls("train")
    assert list(_tar_samples(urls)) == list(wds.tarfile_to_samples()(iter([{"url": u} for u in urls])))


def test_a_damaged_shard_is_refused_with_its_name(tmp_path):
    good = tar_of(tmp_path / "good.tar", [("a.json", b"{}"), ("a.audio.npy", b"x" * 2000)])
    data = open(good, "rb").read()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[:2000])  # inside the second member's data (its header is at byte 1024)
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar at all" * 64)
    flipped = bytearray(data)
    flipped[512 + 512 + 100] ^= 0x01  # a bit of the second header (its mode field): the checksum differs
    bad_header = tmp_path / "bad_header.tar"
    bad_header.write_bytes(bytes(flipped))
    for path, reason in [(cut, "cut short"), (garbage, "not a ustar header"), (bad_header, "at byte 1024")]:
        with pytest.raises(CorruptShard, match=str(path)) as err:
            list(_tar_samples([str(path)]))
        assert reason in str(err.value)


def test_an_oversized_member_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tar_of(tmp_path / "big.tar", [("a.json", b"{}"), ("a.audio.npy", b"x" * 5000)])
    monkeypatch.setattr(shards, "MAX_MEMBER_BYTES", 4096)
    with pytest.raises(CorruptShard, match="more than the 4096 allowed"):
        list(_tar_samples([path]))


# ---- batches through workers --------------------------------------------------------------------------


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("inline", [True, False])
def test_packed_batches_come_back_unchanged(pack, monkeypatch, pooled, inline):
    if not inline:
        monkeypatch.setattr(transport, "INLINE_BYTES", 0)  # every batch through shared memory
    spec = BatchSpec.for_pack(pack, sorted(pack.dims), pooled=pooled)
    batch = spec.collate([spec.decode(raw) for raw in _tar_samples(pack.urls("valid"))])
    packed = pack_batch(batch)
    assert isinstance(packed.buffer, bytes) == inline
    copy = unpack_batch(packed)
    assert copy["sample_id"] == batch["sample_id"]
    for key in ("present", "target"):
        assert torch.equal(copy[key], batch[key]) and copy[key].dtype == batch[key].dtype
    for m in spec.modalities:
        assert torch.equal(copy["features"][m], batch["features"][m])
        assert torch.equal(copy["mask"][m], batch["mask"][m])
    copy["features"][spec.modalities[0]].add_(1)  # writable


def test_pooled_batches_hold_the_mean_of_the_real_steps(pack):
    padded = BatchSpec.for_pack(pack, sorted(pack.dims))
    pooled = BatchSpec.for_pack(pack, sorted(pack.dims), pooled=True)
    samples = [padded.decode(raw) for raw in _tar_samples(pack.urls("valid"))]
    a, b = padded.collate(samples), pooled.collate(samples)
    assert torch.equal(a["present"], b["present"]) and a["sample_id"] == b["sample_id"]
    for i, m in enumerate(padded.modalities):
        x, valid = a["features"][m].float(), a["mask"][m]
        mean = (x * valid.unsqueeze(-1)).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)
        assert b["features"][m].shape == (12, 1, DIMS[m]) and b["features"][m].dtype == torch.float32
        torch.testing.assert_close(b["features"][m][:, 0], mean)
        assert torch.equal(b["mask"][m][:, 0], a["present"][:, i])


def test_persistent_workers_give_each_epoch_exactly(pack):
    spec = spec_for(pack)
    loader = TrainLoader(pack, spec, batch_size=8, shuffle_buffer=16, seed=0, num_workers=2)
    epochs = {n: ids(loader.epoch(n)) for n in (1, 2, 1)}  # the same workers throughout
    for n in (1, 2):
        assert epochs[n] == ids(
            train_loader(pack, spec, batch_size=8, shuffle_buffer=16, seed=0, epoch=n, num_workers=2)
        )
    assert ids(loader.epoch(2)) == epochs[2]
