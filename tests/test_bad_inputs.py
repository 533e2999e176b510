"""A store survives bad inputs: each becomes a failed row or a rejected row with a reason; good samples all extract."""

import csv
import shutil
import wave

import av
import numpy as np
import pytest

from pipeline.config import ExtractConfig
from pipeline.extract import run_extraction
from pipeline.manifest import read_manifest
from storage.catalog import Catalog
from storage.maintenance import verify
from tests.helpers import bundled_subset


def video_only(path):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 20, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def odd_wav(path, rate=11025, channels=2, seconds=0.6):
    t = np.arange(int(rate * seconds)) / rate
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(np.repeat(tone[:, None], channels, 1).tobytes())


@pytest.fixture
def messy(tmp_path):
    folder = tmp_path / "data"
    good = list(csv.DictReader(open(bundled_subset(folder, 4))))
    clips = folder / "clips"
    (clips / "zero.mp4").write_bytes(b"")
    (clips / "truncated.mp4").write_bytes((folder / good[0]["video"]).read_bytes()[:1500])
    (clips / "not-video.mp4").write_text("this is a text file")
    video_only(clips / "silent.mp4")
    odd_wav(clips / "odd rate é.wav")
    shutil.copy(folder / good[1]["video"], clips / "naïve name with spaces.mp4")
    (tmp_path / "outside.mp4").write_bytes(b"x")
    rows = [f'{r["sample_id"]},{r["split"]},{r["label"]},{r["video"]},,"{r["text"]}"' for r in good]
    rows += [
        'zero,train,1,clips/zero.mp4,,"one"',
        'truncated,train,1,clips/truncated.mp4,,"one"',
        'notvideo,train,1,clips/not-video.mp4,,"one"',
        'missing,train,1,clips/gone.mp4,,"one"',
        'silent,train,1,clips/silent.mp4,,"one"',  # no audio track: audio fails, video ok
        'oddrate,train,1,,clips/odd rate é.wav,"one"',  # 11.025 kHz stereo, unicode and spaces
        'unicode,train,1,clips/naïve name with spaces.mp4,,"two"',
        'emptytext,train,1,,,""',
        f'{good[0]["sample_id"]},train,1,clips/zero.mp4,,"dup"',  # duplicate id: rejected, the first kept
        'escape,train,1,../outside.mp4,,"x"',
    ]
    manifest = folder / "messy.csv"
    manifest.write_bytes(
        ("sample_id,split,label,video,audio,text\n" + "\n".join(rows) + "\n").encode()
        + b'badutf8,train,1,,,"caf\xe9"\n'
    )
    return manifest, [r["sample_id"] for r in good]


def test_every_bad_input_is_reported_and_every_good_sample_extracted(messy, tmp_path):
    path, good = messy
    manifest = read_manifest(path, strict=False, check_files=False)
    store = tmp_path / "store"
    report = run_extraction(manifest, store, ExtractConfig(num_workers=1), progress=False)
    rows = {(r["sample_id"], r["modality"]): r for r in Catalog(store).latest()}
    status = {key: r["status"] for key, r in rows.items()}
    for sid in good + ["unicode"]:
        assert all(status[(sid, m)] == "ok" for m in ("text", "audio", "video")), sid
    assert status[("silent", "video")] == "ok" and status[("silent", "audio")] == "failed"
    assert status[("oddrate", "audio")] == "ok" and ("oddrate", "video") not in status
    for sid in ("zero", "truncated", "notvideo", "missing"):
        for m in ("audio", "video"):
            assert status[(sid, m)] == "failed"
            assert "clips/" in rows[(sid, m)]["error"], rows[(sid, m)]["error"]  # names the file
    assert status[("emptytext", "text")] == "failed" and "empty" in rows[("emptytext", "text")]["error"].lower()
    assert rows[("missing", "video")]["error"].endswith("clips/gone.mp4: file not found")
    assert len(report.rejected) == 3  # duplicate id, path escaping the root, invalid UTF-8
    assert report.to_dict()["totals"]["rejected_rows"] == 3
    assert verify(store).bad == {}
    # A re-run retries nothing and writes nothing: the failures are known, the good samples done.
    again = run_extraction(manifest, store, ExtractConfig(num_workers=1), progress=False)
    assert sum(s.shards_written for s in again.modalities) == 0 and again.totals()["ok"] == 0
