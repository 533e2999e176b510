"""Faults on the pack/train side (issue 12): hostile or damaged shards, packs and checkpoints, non-finite
losses. Every damaged input is crafted here; each test fails on the code before the fix."""

import io
import json
import shutil
import tarfile

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.manifest import read_manifest, write_manifest
from storage.pack import pack
from storage.packinfo import read_pack, verify_packs
from storage.shards import CorruptShard
from tests.pack_helpers import write_pack
from tests.test_storage import add_features
from trainers import checkpoints
from trainers.batches import BatchSpec, CorruptSample
from trainers.checkpoints import load_checkpoint, write_json_atomic
from trainers.config import TrainConfig
from trainers.data import eval_loader
from trainers.metrics import json_safe
from trainers.steps import NonFiniteLoss
from trainers.train import evaluate, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(pack_dir, out, **changes) -> TrainConfig:
    base = {
        "pack": pack_dir,
        "out": out,
        "epochs": 2,
        "batch_size": 8,
        "num_workers": 0,
        "shuffle_buffer": 16,
        "hidden": 16,
        "lr": 3e-3,
    }
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def good_pack(tmp_path_factory):
    return write_pack(tmp_path_factory.mktemp("faults") / "pack", missing_rate=0.0)


@pytest.fixture
def pack_copy(good_pack, tmp_path):
    return shutil.copytree(good_pack, tmp_path / "pack")


def members_of(path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def rewrite_shard(path, change) -> None:
    """Write the shard again; change(name, data) gives the member's new bytes, or None to leave it out."""
    members = members_of(path)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            new = change(name, data)
            if new is not None:
                info = tarfile.TarInfo(name)
                info.size = len(new)
                tar.addfile(info, io.BytesIO(new))


def replace_member(path, member: str, new: bytes) -> None:
    rewrite_shard(path, lambda name, data: new if name == member else data)


def nan_like(npy: bytes) -> bytes:
    array = np.load(io.BytesIO(npy), allow_pickle=False)
    buf = io.BytesIO()
    np.save(buf, np.full_like(array, np.nan), allow_pickle=False)
    return buf.getvalue()


def raw_npy(header: str, payload: bytes) -> bytes:
    """A .npy (format 1.0) with the header text as given, however wrong."""
    text = header.encode("latin1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + payload


# ---- item 1: a non-finite loss stops training; metrics.json is strict JSON --------------------------------


@pytest.mark.parametrize(
    "split,sample,where",
    [
        ("train", "train_00003", "epoch 1/2: the training loss is nan"),
        ("valid", "valid_00002", "epoch 1/2: the validation loss is nan"),
    ],
)
def test_a_nan_feature_stops_training_naming_epoch_and_samples(pack_copy, tmp_path, split, sample, where):
    shard = pack_copy / f"{split}-000000.tar"
    audio = dict(members_of(shard))[f"{sample}.audio.npy"]
    replace_member(shard, f"{sample}.audio.npy", nan_like(audio))
    with pytest.raises(NonFiniteLoss, match=where) as err:
        train(config(pack_copy, tmp_path / "run"))
    if split == "train":
        assert sample in str(err.value)  # the batch that held it is named
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_metrics_json_never_holds_nan_or_infinity(tmp_path):
    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))

    write_json_atomic(
        {"valid": {"loss": float("nan"), "corr": float("-inf")}, "history": [1.5, float("inf")]},
        tmp_path / "metrics.json",
    )
    assert strict((tmp_path / "metrics.json").read_text()) == {
        "valid": {"loss": None, "corr": None},
        "history": [1.5, None],
    }
    assert json_safe({"a": (np.float64("nan"), 2)}) == {"a": [None, 2]}


# ---- item 10: a split cut short is refused at train and at evaluate ---------------------------------------


def sample_offset(path, key: str) -> int:
    """Where the first member of sample `key` starts (its header)."""
    with tarfile.open(path) as tar:
        return min(m.offset for m in tar if m.name.startswith(f"{key}."))


@pytest.fixture(scope="module")
def trained(good_pack, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    train(config(good_pack, out, epochs=1))
    return out / "best.pt"


def cut_at_member_boundary(pack_dir, split: str, whole: int = 5) -> str:
    """Cut the first shard right before the header of sample `whole`: the samples before it are intact."""
    shard = pack_dir / f"{split}-000000.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: sample_offset(shard, f"{split}_{whole:05d}")])
    return str(shard)


def drop_samples_after(pack_dir, split: str, keep: int) -> None:
    shard = pack_dir / f"{split}-000000.tar"
    rewrite_shard(shard, lambda name, data: data if int(name.split(".")[0][-5:]) < keep else None)


def test_a_split_cut_at_a_member_boundary_is_refused_by_train(pack_copy, tmp_path):
    shard = cut_at_member_boundary(pack_copy, "valid")
    with pytest.raises(CorruptShard, match=f"{shard}.*end-of-archive"):
        train(config(pack_copy, tmp_path / "run"))


@pytest.mark.parametrize("split,count,held", [("train", 40, 32), ("valid", 12, 8), ("test", 12, 8)])
def test_a_shorter_split_is_refused_by_train(pack_copy, tmp_path, split, count, held):
    drop_samples_after(pack_copy, split, keep=8)  # a well-formed first shard with 8 of its 16 (or 12) samples
    with pytest.raises(ValueError, match=f"pack.json counts {count} {split} samples, its shards hold {held}"):
        train(config(pack_copy, tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training


def test_a_damaged_split_is_refused_by_evaluate(pack_copy, trained):
    evaluate(trained, pack_copy, "test")  # counted intact first: the count must not be remembered past a change
    drop_samples_after(pack_copy, "test", keep=3)
    with pytest.raises(ValueError, match="pack.json counts 12 test samples, its shards hold 3"):
        evaluate(trained, pack_copy, "test")
    shard = cut_at_member_boundary(pack_copy, "test", whole=2)
    with pytest.raises(CorruptShard, match=shard):
        evaluate(trained, pack_copy, "test")


def test_train_and_evaluate_commands_print_the_damage_without_a_traceback(pack_copy, trained, tmp_path):
    from pipeline.cli import app  # the CLI imports Prefect's settings: only where it is used

    drop_samples_after(pack_copy, "test", keep=3)
    settings = config(pack_copy, tmp_path / "run").model_dump(mode="json")
    (tmp_path / "train.json").write_text(json.dumps(settings))
    for command in (["train", str(tmp_path / "train.json")], ["evaluate", str(trained), "--pack", str(pack_copy)]):
        result = CliRunner().invoke(app, command)
        output = " ".join(result.output.split())
        assert result.exit_code == 2 and "pack.json counts 12 test samples, its shards hold 3" in output, output
        assert "Traceback" not in output


# ---- item 11: verify checks packs; pack rebuilds a damaged one --------------------------------------------


@pytest.fixture
def toy_store(tmp_path):
    (tmp_path / "data").mkdir()
    rows = [
        {"sample_id": f"s{i}", "split": ["train", "valid", "test"][i % 3], "label": str(i % 2), "text": f"t{i}"}
        for i in range(9)
    ]
    manifest = read_manifest(write_manifest(rows, tmp_path / "data" / "m.csv"))
    store = tmp_path / "store"
    add_features(store, manifest, "text", "ft", 4)
    return manifest, store


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[600] ^= 0xFF  # inside the first member's data: tar's header checksums do not see it
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage,reason",
    [
        (flip_a_byte, "valid-000000.tar: sha256 mismatch"),
        (lambda p: p.write_bytes(p.read_bytes()[:1536]), "valid-000000.tar: sha256 mismatch"),
        (lambda p: p.unlink(), "valid-000000.tar is missing"),
        (lambda p: (p.parent / "pack.json").write_text('{"splits": {"tra'), "pack.json is missing or unreadable"),
        (
            lambda p: (p.parent / "pack.json").write_text('{"splits": {"train": {"shards": ["x.tar"], "count": 1}}}'),
            "pack.json records no sha256",
        ),
    ],
)
def test_a_damaged_pack_is_named_by_verify_and_rebuilt_by_pack(toy_store, damage, reason):
    from pipeline.cli import app  # the CLI imports Prefect's settings: only where it is used

    manifest, store = toy_store
    first = pack(store, manifest, {"text": "ft"}, progress=False)
    original = {p.name: p.read_bytes() for p in first.path.iterdir()}
    assert verify_packs(store) == {first.pack_id: None}
    damage(first.path / "valid-000000.tar")
    assert reason in verify_packs(store)[first.pack_id]
    result = CliRunner().invoke(app, ["verify", "--store", str(store)])
    assert result.exit_code == 1 and f"bad pack packed/{first.pack_id}" in " ".join(result.output.split())

    again = pack(store, manifest, {"text": "ft"}, progress=False)
    assert again.created and again.pack_id == first.pack_id and reason in again.rebuilt
    assert {p.name: p.read_bytes() for p in again.path.iterdir()} == original  # the same bytes as before
    assert verify_packs(store) == {first.pack_id: None}
    assert [p.name for p in (store / "packed").iterdir()] == [first.pack_id]  # the damaged one is gone
    assert not pack(store, manifest, {"text": "ft"}, progress=False).created


def test_a_damaged_feature_shard_is_named_when_packing(toy_store):
    manifest, store = toy_store
    shard = store / "features/text/ft/shard-0.tar"
    rewrite_shard(shard, lambda name, data: None if name == "s3.npy" else data)
    with pytest.raises(ValueError, match=f"{shard}: no member 's3.npy'"):
        pack(store, manifest, {"text": "ft"}, progress=False)
    shard.write_bytes(b"not a tar" * 100)
    with pytest.raises(ValueError, match=f"{shard}: unreadable feature shard"):
        pack(store, manifest, {"text": "ft"}, progress=False)


# ---- items 17 and 18: bad members named by shard and sample; a negative .npy shape -------------------------


@pytest.mark.parametrize(
    "member,content,reason",
    [
        ("valid_00001.json", b'{"sample_id": "valid_00001", "tar', "Unterminated string"),
        ("valid_00001.json", b'{"sample_id": "valid_00001"}', "no 'target' field"),
        ("valid_00001.json", b'{"sample_id": "valid_00001", "target": "c1"}', "not a classification target"),
        ("valid_00001.audio.npy", b"garbage", "not a .npy array"),
        (
            "valid_00001.audio.npy",
            raw_npy("{'descr': '<f2', 'fortran_order': False, 'shape': (-1, 8), }", bytes(2 * 32)),
            "shape \\(-1, 8\\) is not a tuple of non-negative",
        ),
        (
            "valid_00001.audio.npy",
            raw_npy("{'descr': '<f2', 'fortran_order': False, 'shape': (9, 8), }", bytes(2 * 32)),
            "needs 144 bytes, the member holds 64",
        ),
        (
            "valid_00001.audio.npy",
            raw_npy("{'descr': '<f2', 'fortran_order': False, 'shape': (4, 8", bytes(64)),
            ".npy header cannot be read",
        ),
    ],
)
def test_a_bad_member_is_named_by_shard_and_sample(pack_copy, member, content, reason, workers=0):
    shard = pack_copy / "valid-000000.tar"
    replace_member(shard, member, content)
    info = read_pack(pack_copy)
    spec = BatchSpec.for_pack(info, sorted(info.dims))
    with pytest.raises(CorruptSample, match=f"{shard}: sample 'valid_00001': .*{reason}"):
        list(eval_loader(info, spec, "valid", batch_size=4, num_workers=workers))


def test_a_bad_member_is_named_through_a_loader_worker(pack_copy):
    """DataLoader raises a worker's exception again in the trainer: it must keep its type and message."""
    test_a_bad_member_is_named_by_shard_and_sample(
        pack_copy, "valid_00001.audio.npy", b"garbage", "not a .npy array", workers=1
    )


# ---- item 15: checkpoint names past epoch 999 --------------------------------------------------------------


def test_training_past_epoch_999_finishes_and_resumes(good_pack, tmp_path):
    out = tmp_path / "run"
    train(config(good_pack, out, epochs=1))
    saved = load_checkpoint(out / "checkpoints" / "epoch-001.pt")
    (out / "checkpoints" / "epoch-001.pt").unlink()
    torch.save({**saved, "epoch": 999}, out / "checkpoints" / "epoch-999.pt")  # as if 998 more epochs had run

    metrics = train(config(good_pack, out, epochs=1001))
    assert [h["epoch"] for h in metrics["history"]] == [1, 1000, 1001]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-1000.pt", "epoch-1001.pt"]
    assert train(config(good_pack, out, epochs=1001))["history"] == metrics["history"]  # nothing left to train


# ---- item 17: a truncated checkpoint falls back to the previous epoch's -------------------------------------


def test_a_truncated_checkpoint_falls_back_to_the_previous_epoch(good_pack, tmp_path, capsys):
    straight = train(config(good_pack, tmp_path / "straight", epochs=3))
    out = tmp_path / "resumed"
    train(config(good_pack, out, epochs=3))
    latest = out / "checkpoints" / "epoch-003.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # what a power cut can leave of an unsynced file
    (out / "metrics.json").unlink()
    capsys.readouterr()

    resumed = train(config(good_pack, out, epochs=3))
    assert f"{latest}: unreadable checkpoint" in capsys.readouterr().err
    assert resumed["history"] == straight["history"] and resumed["test"] == straight["test"]  # epoch 3 again, exactly


def test_an_unreadable_checkpoint_is_named(tmp_path, good_pack):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(checkpoints.CheckpointError, match=f"{bad}: unreadable checkpoint"):
        evaluate(bad, good_pack, "test")
