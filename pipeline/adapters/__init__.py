"""Dataset adapters: turn a benchmark's own layout into a precal manifest.

`import_dataset(name, root, out, **options)` runs the adapter `ADAPTERS.get(name)`, writes the manifest of
every sample it could map (paths relative to the manifest's folder) and returns an ImportReport naming
what it could not map. Each adapter is a function `collect(root, **options) -> Collected`; its keyword
arguments are its options (the CLI's --seed, --valid-share, ...).
"""

from __future__ import annotations

import inspect
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.adapters import ave, cmu_mosi, cremad, kinetics_sounds, ucf101  # noqa: F401 (each registers itself)
from pipeline.adapters.common import ADAPTERS, DUPLICATE, Collected, Issue, LayoutError
from pipeline.manifest import Sample, write_manifest
from storage.layout import SPLITS

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"

__all__ = [
    "ADAPTERS",
    "ImportReport",
    "Issue",
    "LayoutError",
    "adapter_options",
    "import_dataset",
    "preset_path",
    "summary_lines",
]


@dataclass
class ImportReport:
    dataset: str
    manifest: Path | None  # None when nothing could be mapped (no manifest is written)
    counts: dict[str, int]  # samples per split
    classes: int | None  # distinct labels; None for regression
    skipped: list[Issue] = field(default_factory=list)
    incomplete: list[Issue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    selection: dict[str, str] = field(default_factory=dict)  # features imported directly: {modality: fingerprint}
    pack: Path | None = None  # the pack made of imported features, ready to train on

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update({k: None if getattr(self, k) is None else str(getattr(self, k)) for k in ("manifest", "pack")})
        return data


def adapter_options(name: str) -> list[str]:
    """The keyword options an adapter accepts (its CLI flags with '-' for '_')."""
    return [p for p in inspect.signature(ADAPTERS.get(name)).parameters if p != "root"]


def preset_path(name: str) -> Path:
    return PRESETS_DIR / f"{name}.yaml"


def import_dataset(name: str, root: str | Path, out: str | Path, **options) -> ImportReport:
    """Map the data set at `root` with adapter `name`; write the manifest to `out`; report the rest."""
    collect = ADAPTERS.get(name)  # an unknown name raises, listing the known ones
    accepted = adapter_options(name)
    wrong = sorted(set(options) - set(accepted))
    if wrong:
        flags = ", ".join("--" + o.replace("_", "-") for o in accepted) or "none"
        raise ValueError(f"option(s) {', '.join(wrong)} do not apply to {name} (its options: {flags})")
    root, out = Path(root).resolve(), Path(out).resolve()
    if not root.is_dir():
        raise LayoutError(f"{root}: no such folder")
    collected = collect(root, **options)
    samples = unique(collected)
    report = ImportReport(
        name,
        None,
        {s: sum(x.split == s for x in samples) for s in SPLITS},
        count_classes(samples),
        collected.skipped,
        collected.incomplete,
        collected.notes,
    )
    if samples:
        report.manifest = write_manifest([manifest_row(s, out.parent) for s in samples], out)
        report.notes.extend(placement_notes(root, out, report.counts))
    return report


def unique(collected: Collected) -> list[Sample]:
    """Samples in id order; a second sample with the same id is reported, not written."""
    seen: dict[str, Sample] = {}
    for sample in collected.samples:
        if sample.sample_id in seen:
            collected.skip(DUPLICATE, sample.sample_id, "two items map to this sample_id; the first is kept")
        else:
            seen[sample.sample_id] = sample
    return [seen[k] for k in sorted(seen)]


def count_classes(samples: list[Sample]) -> int | None:
    if any(isinstance(s.label, float) for s in samples):
        return None
    return len({s.label for s in samples})


def manifest_row(sample: Sample, folder: Path) -> dict:
    row = {
        "sample_id": sample.sample_id,
        "split": sample.split,
        "label": sample.label,
        "text": sample.text,
        "start": sample.start,
        "end": sample.end,
    }
    for column in ("video", "audio"):
        path = getattr(sample, column)
        row[column] = None if path is None else Path(os.path.relpath(path, folder)).as_posix()
    return row


def placement_notes(root: Path, out: Path, counts: dict[str, int]) -> list[str]:
    notes = [
        f"the {split} split is empty: training selects on valid and reports test"
        for split in ("valid", "test")
        if not counts[split]
    ]
    if not root.is_relative_to(out.parent):
        notes.append(
            f"the media lie outside the manifest's folder {out.parent}: pass --allow-outside-root to "
            "extract/pack, or write the manifest inside the data set's folder"
        )
    return notes


def summary_lines(report: ImportReport, limit: int = 10) -> list[str]:
    """What a person needs to read: counts, each kind of unmapped item with examples, notes."""
    if report.manifest is None:
        lines = ["nothing could be mapped: no manifest written"]
    else:
        counts = ", ".join(f"{split} {n}" for split, n in report.counts.items())
        classes = f"; {report.classes} classes" if report.classes is not None else "; regression labels"
        lines = [f"wrote {report.manifest} ({counts}{classes})"]
    for title, issues in (("not mapped", report.skipped), ("mapped without a modality", report.incomplete)):
        if not issues:
            continue
        kinds = ", ".join(f"{n} {kind}" for kind, n in Counter(i.kind for i in issues).most_common())
        lines.append(f"{len(issues)} {title}: {kinds}")
        lines.extend(f"  {issue}" for issue in issues[:limit])
        if len(issues) > limit:
            lines.append(f"  ... and {len(issues) - limit} more (--report FILE lists them all)")
    lines.extend(f"note: {note}" for note in report.notes)
    if report.pack is not None:
        lines.append(f"packed {report.pack}: train on it with `precal train CONFIG` (pack: {report.pack})")
    return lines
