"""Import MMSA's pre-extracted CMU-MOSI/MOSEI features (`unaligned_50.pkl`, `aligned_50.pkl`) straight
into the feature store, to compare with published results on exactly those features.

These files are Python pickles, and unpickling can run any code hidden in the file. Nothing else in
precal unpickles; this importer does so only when asked (`allow_pickle=True`, the CLI's --allow-pickle),
and even then through an allow-list that admits numpy arrays and plain containers only.

The file: {"train" | "valid" | "test": {"id": [N] ("<video_id>$_$<clip_id>"), "regression_labels": [N],
"text" [N, T, D] (or "text_bert"), "audio" [N, T, D], "vision" [N, T, D], optionally "raw_text",
"audio_lengths", "vision_lengths"}}; vision becomes the `video` modality.

Written: feature shards `<store>/features/<modality>/<fingerprint>/shard-*.tar` (`<id>.npy` + `<id>.json`,
as extraction writes them), their catalog rows, and a manifest. Pack matches catalog rows to manifest
samples by content hash, so the manifest describes each sample by what its features came from: `audio`
and `video` name the .pkl itself (a changed file then reads as changed content) and `text` holds the
transcript (`raw_text`, else the clip id); the rows record the hashes computed from that manifest.
Pack with the returned selection ({modality: fingerprint}); there is nothing to `precal extract`.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pipeline.adapters import ImportReport, manifest_row
from pipeline.adapters.cmu_mosi import clip_sample_id
from pipeline.adapters.common import DUPLICATE, UNKNOWN_LABEL, Collected, LayoutError, safe_id
from pipeline.manifest import Sample, read_manifest, write_manifest
from storage.catalog import Catalog
from storage.features import FeatureSet, FeatureWriter
from storage.fingerprint import FileHashCache, content_hash, json_fingerprint
from storage.layout import SPLITS, Store
from storage.lock import store_lock
from storage.pack import pack
from storage.shards import sha256_file

MODALITY_KEYS = {"text": ("text", "text_bert"), "audio": ("audio",), "video": ("vision",)}
LENGTH_KEYS = {"audio": "audio_lengths", "video": "vision_lengths"}
# What an MMSA file is made of (numpy 1.x and 2.x spell the array module differently); nothing callable else.
ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # bytes written by protocol 2
}


class PickleRefused(PermissionError):
    """Loading the file needs unpickling, which the caller did not allow."""


def refusal(path: Path) -> str:
    return (
        f"{path} is a Python pickle. Loading a pickle can run any code its author hid in it, with your "
        "permissions. Load only a file you trust (MMSA's own download, checked), then pass --allow-pickle; "
        "precal then unpickles it admitting numpy arrays, lists, dicts and strings only."
    )


def pickle_warning(path: Path) -> str:
    return (
        f"unpickling {path} (--allow-pickle): only numpy arrays and plain containers are admitted, "
        "but a pickle is still code; use files you trust"
    )


class ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing {module}.{name}: an MMSA feature file holds only numpy arrays, lists, dicts and strings"
            )
        return super().find_class(module, name)


def load_mmsa(path: Path, *, allow_pickle: bool = False) -> dict:
    """The file's splits; raises PickleRefused unless `allow_pickle`, LayoutError when it is not MMSA's."""
    if not allow_pickle:
        raise PickleRefused(refusal(path))
    try:
        with open(path, "rb") as f:
            data = ArraysOnly(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise LayoutError(f"{path}: not an MMSA feature file ({err})") from err
    splits = [s for s in SPLITS if isinstance(data, dict) and isinstance(data.get(s), dict)]
    if not splits:
        raise LayoutError(f"{path}: expected a dict with train/valid/test entries")
    for split in splits:
        missing = [k for k in ("id", "regression_labels") if k not in data[split]]
        if missing:
            raise LayoutError(f"{path}: the {split} entry lacks {', '.join(missing)}")
    return {s: data[s] for s in splits}


def import_mmsa_features(
    path: str | Path,
    out: str | Path,
    store: str | Path,
    *,
    allow_pickle: bool = False,
    dtype: str = "float32",
    shard_size: int = 1000,
    progress: bool = True,
) -> ImportReport:
    """Write the file's features into `store` and a manifest of its samples to `out`."""
    path, out, store = Path(path).resolve(), Path(out).resolve(), Path(store).resolve()
    data = load_mmsa(path, allow_pickle=allow_pickle)
    collected = Collected()
    keys = feature_keys(data, collected)
    places = plan_samples(data, path, keys, collected)
    write_manifest([manifest_row(sample, out.parent) for _, _, sample in places], out)
    manifest = read_manifest(out, allow_outside_root=True)  # hashes exactly as pack will compute them
    source = sha256_file(path)
    report = ImportReport(
        "mmsa",
        out,
        {s: sum(p[0] == s for p in places) for s in SPLITS},
        None,
        collected.skipped,
        collected.incomplete,
        collected.notes,
    )
    with store_lock(store):
        files = FileHashCache(Store(store).file_hashes)
        for modality, key in keys.items():
            fingerprint = json_fingerprint({"source": source, "key": key, "dtype": dtype})
            digests = {s.sample_id: content_hash(modality, s, files) for s in manifest.samples}
            finished = done(store, modality, fingerprint, digests)
            todo = [place for place in places if place[2].sample_id not in finished]
            feature_set = FeatureSet(modality, f"mmsa-{path.stem}", fingerprint, dtype)
            writer = FeatureWriter(store, feature_set, shard_size)
            replaced = write_modality(writer, data, key, todo, digests, progress)
            if replaced:
                report.notes.append(f"{modality}: {replaced} non-finite feature values set to 0")
            report.selection[modality] = fingerprint
        files.save()
    if not path.is_relative_to(out.parent):
        report.notes.append(
            f"{path.name} lies outside the manifest's folder: read the manifest with "
            "allow_outside_root (--allow-outside-root) to pack it"
        )
    return report


def import_and_pack(
    path: str | Path, out: str | Path, store: str | Path, *, allow_pickle: bool = False, progress: bool = True
) -> ImportReport:
    """Import, then pack the imported features (`precal pack` selects by encoder, which these lack)."""
    report = import_mmsa_features(path, out, store, allow_pickle=allow_pickle, progress=progress)
    store = Path(store).resolve()
    with store_lock(store):
        packed = pack(
            store, read_manifest(out, allow_outside_root=True), report.selection, task="regression", progress=progress
        )
    report.pack = packed.path
    return report


def feature_keys(data: dict, collected: Collected) -> dict[str, str]:
    """Modality -> the file's key for it, for the modalities every split has as [N, T, D] or [N, D]."""
    keys = {}
    for modality, names in MODALITY_KEYS.items():
        key = next((k for k in names if all(k in part for part in data.values())), None)
        if key is None:
            collected.notes.append(f"no {'/'.join(names)} features in every split: no {modality} modality")
        elif any(np.ndim(part[key]) not in (2, 3) for part in data.values()):
            collected.notes.append(f"{key} is not [N, T, D] or [N, D]: no {modality} modality")
        elif key == "text_bert" and np.shape(next(iter(data.values()))[key])[1] == 3:
            # MMSA's text_bert is [N, 3, T]: BERT token ids, mask and segment ids, not features.
            collected.notes.append("text_bert holds BERT token ids, not features: no text modality")
        else:
            keys[modality] = key
    if not keys:
        raise LayoutError("the file has no usable text, audio or vision features")
    return keys


def plan_samples(data: dict, path: Path, keys: dict[str, str], collected: Collected) -> list[tuple[str, int, Sample]]:
    """(split, row in the file, Sample) per clip; a clip id seen before is reported and left out."""
    places, seen = [], set()
    for split, part in data.items():
        labels = np.asarray(part["regression_labels"], dtype=np.float32).reshape(-1)
        texts = part.get("raw_text")
        for i, raw_id in enumerate(part["id"]):
            sample_id = mmsa_sample_id(str(raw_id))
            if sample_id in seen:
                collected.skip(DUPLICATE, f"{split}[{i}] {raw_id}", "this clip id appeared before")
                continue
            if not math.isfinite(labels[i]):
                collected.skip(UNKNOWN_LABEL, f"{split}[{i}] {raw_id}", "the regression label is not a number")
                continue
            seen.add(sample_id)
            text = str(texts[i]).strip() if texts is not None else ""
            # str() of a float32 is its shortest exact form: 0.6, not 0.6000000238418579
            places.append(
                (
                    split,
                    i,
                    Sample(
                        sample_id,
                        split,
                        float(str(labels[i])),
                        video=path if "video" in keys else None,
                        audio=path if "audio" in keys else None,
                        text=(text or str(raw_id)) if "text" in keys else None,
                    ),
                )
            )
    return places


def mmsa_sample_id(raw_id: str) -> str:
    """MMSA ids are `<video_id>$_$<clip_id>`: the raw-layout adapter's id for the same clip."""
    video_id, sep, clip_id = raw_id.rpartition("$_$")
    return clip_sample_id(video_id, clip_id) if sep else safe_id(raw_id)


def done(store: Path, modality: str, fingerprint: str, digests: dict[str, str]) -> set[str]:
    """Samples whose features from this file are already in the store (a re-run writes only the rest)."""
    return {
        r["sample_id"]
        for r in Catalog(store).latest()
        if r["modality"] == modality
        and r["fingerprint"] == fingerprint
        and r["status"] == "ok"
        and r["content_hash"] == digests.get(r["sample_id"])
        and Store(store).shard_path(r["shard"]).is_file()
    }


def features(part: dict, modality: str, key: str, index: int) -> tuple[np.ndarray, int]:
    """One clip's features without padding, and how many non-finite values (MOSI's COVAREP audio has
    -inf) were set to 0."""
    array = np.array(part[key][index], dtype=np.float32)
    bad = ~np.isfinite(array)
    array[bad] = 0.0
    if array.ndim != 2:
        return array, int(bad.sum())
    lengths = part.get(LENGTH_KEYS.get(modality, ""))
    if lengths is not None:
        steps = int(lengths[index])
    else:  # padding is zero rows at the end; the trainer's mask must not count them as real steps
        nonzero = np.flatnonzero(np.abs(array).sum(1))
        steps = int(nonzero[-1]) + 1 if nonzero.size else 1
    return array[: min(max(steps, 1), len(array))], int(bad.sum())


def write_modality(
    writer: FeatureWriter,
    data: dict,
    key: str,
    todo: list[tuple[str, int, Sample]],
    digests: dict[str, str],
    progress: bool,
) -> int:
    """Every clip of `todo` through the writer (a shard committed before its catalog rows); returns how
    many non-finite values were set to 0."""
    modality, replaced = writer.features.modality, 0
    for split, i, sample in tqdm(todo, desc=f"import {modality}", unit="clip", disable=not progress):
        array, bad = features(data[split], modality, key, i)
        writer.add(sample.sample_id, digests[sample.sample_id], array)
        replaced += bad
    writer.close()
    return replaced
