import pytest

from pipeline.manifest import ManifestError, read_manifest, write_manifest


@pytest.fixture
def media(tmp_path):
    (tmp_path / "clips").mkdir()
    for name in ("a.mp4", "b.wav", "c d é.mp4"):
        (tmp_path / "clips" / name).write_bytes(b"x")
    return tmp_path


def write_csv(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_csv_jsonl_and_parquet_alike(media):
    rows = [
        {"sample_id": "s1", "split": "train", "label": "3", "video": "clips/a.mp4", "text": "three"},
        {"sample_id": "s-2", "split": "test", "label": "happy", "audio": "clips/b.wav", "start": "1.5", "end": "2"},
        {"sample_id": "s_3", "split": "valid", "label": "0.5", "video": "clips/c d é.mp4"},
    ]
    loaded = [read_manifest(write_manifest(rows, media / f"m{ext}")) for ext in (".csv", ".jsonl", ".parquet")]
    for manifest in loaded:
        s1, s2, s3 = manifest.samples
        assert (s1.sample_id, s1.split, s1.label, s1.text) == ("s1", "train", 3, "three")
        assert s1.video == media / "clips" / "a.mp4" and s1.audio is None
        assert s2.label == "happy" and (s2.start, s2.end) == (1.5, 2.0) and s2.text is None
        assert s3.video.name == "c d é.mp4" and s3.label == 0.5
        assert s2.has("audio") and not s2.has("video") and s1.has("audio")  # audio may come from the video


def test_reports_every_problem_with_row_numbers(media):
    path = write_csv(
        media / "m.csv",
        "sample_id,split,label,video,text\n"
        "ok1,train,1,clips/a.mp4,\n"
        "bad id!,train,1,clips/a.mp4,\n"
        "ok1,valid,1,clips/a.mp4,\n"
        "x3,dev,1,clips/a.mp4,\n"
        "x4,test,,clips/a.mp4,\n"
        "x5,test,1,clips/missing.mp4,\n"
        "x6,test,1,../outside.mp4,\n"
        "x7,test,1,,\n",
    )
    (media.parent / "outside.mp4").write_bytes(b"x")
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    problems = "\n".join(err.value.problems)
    assert len(err.value.problems) == 7
    for expected in (
        "row 2: sample_id 'bad id!'",
        "row 3: duplicate sample_id 'ok1' (first at row 1)",
        "row 4: split 'dev'",
        "row 5: label is empty",
        "row 6: video file 'clips/missing.mp4' does not exist",
        "row 7: video path '../outside.mp4' escapes the dataset root",
        "row 8: no modality given",
    ):
        assert expected in problems
    assert str(path) in str(err.value)


def test_outside_root_allowed_on_request(media):
    (media.parent / "outside.mp4").write_bytes(b"x")
    path = write_csv(media / "m.csv", "sample_id,split,label,video\nx,train,1,../outside.mp4\n")
    assert read_manifest(path, allow_outside_root=True).samples[0].video == media.parent / "outside.mp4"


def test_absolute_and_symlinked_paths_cannot_escape(media, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "v.mp4"
    elsewhere.write_bytes(b"x")
    (media / "clips" / "link.mp4").symlink_to(elsewhere)
    path = write_csv(media / "m.csv", f"sample_id,split,label,video\nx,train,1,{elsewhere}\ny,train,1,clips/link.mp4\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert len(err.value.problems) == 2


def test_quoted_empty_text_is_kept_but_unquoted_empty_is_missing(media):
    path = write_csv(media / "m.csv", 'sample_id,split,label,text\na,train,1,""\nb,train,1,\nc,train,1,hi\n')
    with pytest.raises(ManifestError):  # b has no modality at all
        read_manifest(path)
    path = write_csv(media / "m.csv", 'sample_id,split,label,text\na,train,1,""\nc,train,1,hi\n')
    a, c = read_manifest(path).samples
    assert a.text == "" and c.text == "hi"


def test_unreadable_and_missing_columns(media):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(media / "nope.csv")
    with pytest.raises(ManifestError, match="missing required column"):
        read_manifest(write_csv(media / "m.csv", "sample_id,label\na,1\n"))
    with pytest.raises(ManifestError, match="unknown manifest format"):
        read_manifest(write_csv(media / "m.txt", "x"))
    (media / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ManifestError, match="cannot be parsed"):
        read_manifest(media / "bad.parquet")


def test_task_inferred_from_labels(media):
    rows = [
        {"sample_id": f"s{i}", "split": "train", "label": v, "text": "t"} for i, v in enumerate(["-1.2", "0.4", "2"])
    ]
    assert read_manifest(write_manifest(rows, media / "r.csv")).task() == "regression"
    rows = [{"sample_id": f"s{i}", "split": "train", "label": v, "text": "t"} for i, v in enumerate(["1", "2"])]
    assert read_manifest(write_manifest(rows, media / "c.csv")).task() == "classification"


def test_leading_zeros_and_invalid_utf8_rows(media):
    path = media / "m.csv"
    path.write_bytes(b"sample_id,split,label,text\n007,train,01,fine\nx2,train,1,caf\xe9 au lait\n")
    with pytest.raises(ManifestError, match=r"row 2: text is not valid UTF-8"):
        read_manifest(path)
    lenient = read_manifest(path, strict=False)
    assert [s.sample_id for s in lenient.samples] == ["007"] and lenient.samples[0].label == 1
    assert lenient.rejected == ["row 2: text is not valid UTF-8 (byte 3)"]


def test_lenient_reading_keeps_good_rows_but_fails_when_none_is_usable(media):
    path = write_csv(
        media / "m.csv",
        "sample_id,split,label,video\na,train,1,clips/a.mp4\na,train,1,clips/a.mp4\n"
        "b,train,1,../../etc/passwd\nc,train,1,clips/gone.mp4\n",
    )
    manifest = read_manifest(path, strict=False, check_files=False)
    assert [s.sample_id for s in manifest.samples] == ["a", "c"]  # a missing file is extraction's failure to report
    assert len(manifest.rejected) == 2 and "duplicate" in manifest.rejected[0] and "escapes" in manifest.rejected[1]
    with pytest.raises(ManifestError):
        read_manifest(write_csv(media / "n.csv", "sample_id,split,label,text\nbad id,train,1,x\n"), strict=False)
