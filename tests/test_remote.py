"""Store operations on URLs (storage/remote.py) against a real S3 server (SeaweedFS on loopback)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
from botocore.exceptions import ClientError
from botocore.session import get_session

from storage import remote
from storage.remote import URL, location


def test_locations_parse_paths_and_urls(tmp_path):
    assert location(str(tmp_path)) == tmp_path
    assert location(f"file://{tmp_path}") == tmp_path
    url = location("s3://bucket/store/")
    assert isinstance(url, URL) and str(url) == "s3://bucket/store"
    shard = url / "features" / "audio" / "shard-1.tar"
    assert (shard.name, shard.suffix, str(shard.parent)) == ("shard-1.tar", ".tar", "s3://bucket/store/features/audio")
    assert shard.relative_to(url) == PurePosixPath("features/audio/shard-1.tar")
    assert shard.with_name("x.json") == url / "features/audio/x.json"
    with pytest.raises(ValueError, match="is not under"):
        shard.relative_to(URL("gs://bucket/store"))


def test_missing_filesystem_names_the_extra(monkeypatch):
    import fsspec

    def not_installed(protocol, **options):  # as fsspec fails when gcsfs is not installed
        raise ImportError("Install gcsfs to access Google Storage")

    monkeypatch.setattr(fsspec, "filesystem", not_installed)
    with pytest.raises(ImportError, match=r"gs://bucket/store: no filesystem for gs:// is installed .*precal\[gcs\]"):
        remote.filesystem(URL("gs://bucket/store"))


def test_server_refuses_unknown_keys(s3):
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key="signed", Body=b"x")
    stranger = get_session().create_client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id="nobody",
        aws_secret_access_key="wrong",
        region_name="us-east-1",
    )
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        stranger.get_object(Bucket=s3.bucket, Key="signed")


def test_conditional_writes_are_answered_by_the_server(s3):
    """SeaweedFS refuses a second create-only PUT and a replace of a version that changed."""
    key = URL(s3.new_prefix()) / "lease.json"
    remote.put_once(key, b"first")
    with pytest.raises(FileExistsError):
        remote.put_once(key, b"second")
    assert remote.read_bytes(key) == b"first"
    tag = remote.etag(key)
    remote.put_if_unchanged(key, b"third", tag)
    with pytest.raises(FileExistsError, match="changed meanwhile"):
        remote.put_if_unchanged(key, b"fourth", tag)
    assert remote.read_bytes(key) == b"third"


def test_files_children_size_remove(s3):
    root = URL(s3.new_prefix())
    assert remote.files_under(root) == {} and remote.children(root) == []
    remote.put(root / "features/audio/fp/shard-1.tar", b"a" * 10)
    remote.put(root / "features/video/fp/shard-2.tar", b"b" * 20)
    remote.put(root / "catalog/part-1.parquet", b"c")
    found = remote.files_under(root / "features", ".tar")
    assert found == {root / "features/audio/fp/shard-1.tar": 10, root / "features/video/fp/shard-2.tar": 20}
    assert remote.children(root) == [root / "catalog", root / "features"]
    assert remote.size(root / "catalog/part-1.parquet") == 1
    with remote.open_stream(root / "features/video/fp/shard-2.tar") as f:
        f.seek(15)
        assert f.read() == b"b" * 5
    remote.remove(root / "catalog/part-1.parquet")
    remote.remove(root / "catalog/part-1.parquet")  # absent already: fine
    assert not remote.exists(root / "catalog/part-1.parquet")


def test_local_paths_take_the_same_calls(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.tar").write_bytes(b"12345")
    assert remote.files_under(tmp_path, ".tar") == {tmp_path / "a" / "x.tar": 5}
    assert remote.children(tmp_path) == [tmp_path / "a"]
    assert remote.read_bytes(tmp_path / "a" / "x.tar") == b"12345"
    remote.remove(tmp_path / "a" / "x.tar")
    assert not remote.exists(Path(tmp_path / "a" / "x.tar"))


def test_urls_answer_the_path_methods_readers_use(s3):
    root = URL(s3.new_prefix())
    root.mkdir(parents=True, exist_ok=True)  # no folders on an object store: nothing to do
    (root / "packed/abc/pack.json").write_text('{"a": 1}')
    (root / "packed/abc/train-000000.tar").write_bytes(b"x" * 7)
    assert (root / "packed").is_dir() and (root / "packed/abc/pack.json").is_file()
    assert not (root / "packed/abc").is_file() and not (root / "nothing").exists()
    assert [p.name for p in (root / "packed").iterdir()] == ["abc"]
    assert [p.name for p in (root / "packed/abc").glob("*.tar")] == ["train-000000.tar"]
    assert [p.name for p in root.rglob("*.json")] == ["pack.json"]
    assert (root / "packed/abc/pack.json").read_text() == '{"a": 1}'
    assert (root / "packed/abc/train-000000.tar").stat().st_size == 7
    (root / "packed/abc/pack.json").unlink()
    (root / "packed/abc/pack.json").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError):
        (root / "packed/abc/pack.json").unlink()


def test_the_server_counts_requests_by_type(s3):
    before = s3.requests()
    key = URL(s3.new_prefix()) / "counted"
    remote.put(key, b"1")
    remote.read_bytes(key)
    after = s3.requests()
    assert after["PUT"] - before["PUT"] == 1 and after["GET"] - before["GET"] >= 1


def test_a_manifest_in_a_bucket_names_media_in_the_bucket(s3, tmp_path):
    from pipeline.manifest import ManifestError, read_manifest

    root = URL(s3.new_prefix())
    remote.put(root / "data/clips/a.mp4", b"not really a video")
    remote.put(
        root / "data/manifest.csv",
        b"sample_id,split,label,video,text\na,train,1,clips/a.mp4,hello\nb,test,2,,only text\n",
    )
    manifest = read_manifest(str(root / "data/manifest.csv"))
    assert manifest.root == root / "data"
    assert [s.video for s in manifest.samples] == [root / "data/clips/a.mp4", None]
    remote.put(
        root / "data/bad.jsonl",
        b'{"sample_id": "a", "split": "train", "label": 1, "video": "clips/gone.mp4"}\n'
        b'{"sample_id": "b", "split": "train", "label": 1, "video": "../../elsewhere.mp4"}\n',
    )
    with pytest.raises(ManifestError) as err:
        read_manifest(str(root / "data/bad.jsonl"))
    assert "row 1: video file 'clips/gone.mp4' does not exist" in str(err.value)
    assert "row 2: video path '../../elsewhere.mp4' escapes the dataset root" in str(err.value)
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(str(root / "data/none.csv"))
