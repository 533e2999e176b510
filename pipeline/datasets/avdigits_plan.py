"""AV-digits planning (no media): which recording, image, motion seed, transcript and perturbation
each sample gets. A pure function of the inputs and the seed, so the same seed writes byte-identical
tables.

A seeded share of each split has exactly one modality, drawn at random, perturbed in one of two ways:
- conflict: the modality carries another digit (an MNIST image, an FSDD recording of the same speaker
  where possible, or a transcript naming another digit), detail `digit=<d>`;
- degraded: video with heavy pixel noise or a block occluding the digit (`noise`, `occlusion`), audio
  buried in white noise (`snr=-10dB`, `snr=-5dB`), or an unusable transcript (`garbled`: most
  characters replaced; `filler`: only filler words such as "um the uh").
An emptied transcript is represented by filler words rather than an empty field: an empty text is a
missing modality (extraction records a failed row), which is a different condition from a degraded
one, so every generated sample keeps all three modalities. The label is always the true digit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.datasets.avdigits_sources import (
    DIGIT_WORDS,
    DIGITS,
    DatasetError,
    Recording,
    mnist_partition,
)
from storage.layout import SPLITS

PERTURBED_MODALITIES = ("video", "audio", "text")  # in this order: the seeded draw picks by index
KINDS = ("conflict", "degraded")
SNR_CHOICES_DB = (-10, -5)
TEMPLATES = (
    "the speaker said {word}",
    "the speaker says {word}",
    "{word}",
    "i heard {word}",
    "they said the number {word}",
    "the digit spoken is {word}",
    "{word}, said the speaker",
    "someone says {word}",
)
FILLERS = ("um", "uh", "the", "er", "hmm", "so", "like", "well")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Perturbation:
    modality: str = ""
    kind: str = "clean"
    detail: str = ""


@dataclass(frozen=True)
class PlannedSample:
    sample_id: str
    split: str
    label: int
    speech: Recording  # what the clip's audio track plays (another digit's take for an audio conflict)
    mnist_row: int  # what the clip shows (another digit's image for a video conflict)
    text: str
    perturbation: Perturbation
    render_seed: int  # motion path and noise of this clip
    snr_db: int | None = None


def plan_avdigits(
    recordings: list[Recording],
    mnist_labels: np.ndarray,
    *,
    per_class: int | None = None,
    seed: int = 0,
    perturb_share: float = 0.3,
    split_shares: dict[str, float] | None = None,
) -> list[PlannedSample]:
    """Decide every sample: recording, image, transcript, perturbation, render seed. Deterministic by seed.

    `per_class` samples per digit (None: every recording) are spread over the splits by `split_shares`
    (None: in proportion to the takes available in each split).
    """
    if per_class is not None and per_class < 1:
        raise DatasetError(f"per-class must be at least 1, got {per_class}")
    if not 0.0 <= perturb_share <= 1.0:
        raise DatasetError(f"perturb-share must be between 0 and 1, got {perturb_share}")
    # Independent streams: changing the perturbation share does not change which takes are chosen.
    select_rng, image_rng, sample_rng = (np.random.default_rng([seed, stream]) for stream in range(3))
    by_cell = _group_by_digit_and_split(recordings)
    chosen = _choose_recordings(by_cell, per_class, split_shares, select_rng)
    pools = mnist_partition(mnist_labels)
    images = _assign_images(chosen, pools, image_rng)
    perturbed = _choose_perturbed(chosen, perturb_share, sample_rng)
    return [
        _plan_sample(rec, image, i in perturbed, by_cell, pools, sample_rng)
        for i, (rec, image) in enumerate(zip(chosen, images))
    ]


def _group_by_digit_and_split(recordings: list[Recording]) -> dict[tuple[int, str], list[Recording]]:
    cells: dict[tuple[int, str], list[Recording]] = {(d, s): [] for d in DIGITS for s in SPLITS}
    for rec in recordings:
        cells[rec.digit, rec.split].append(rec)
    return cells


def _split_counts(wanted: int, available: dict[str, int], shares: dict[str, float] | None) -> dict[str, int]:
    """How many of a digit's samples each split gets: shares of `wanted`, capped by the takes available."""
    total = sum(available.values())
    shares = shares or {s: available[s] / total for s in SPLITS}
    norm = sum(shares.get(s, 0.0) for s in SPLITS)
    ideal = {s: wanted * shares.get(s, 0.0) / norm for s in SPLITS}
    counts = {s: min(int(ideal[s]), available[s]) for s in SPLITS}
    # Hand out the rest one at a time to the split furthest below its share that still has takes.
    while sum(counts.values()) < wanted:
        open_splits = [s for s in SPLITS if counts[s] < available[s]]
        counts[max(open_splits, key=lambda s: ideal[s] - counts[s])] += 1
    return counts


def _choose_recordings(by_cell, per_class, split_shares, rng) -> list[Recording]:
    chosen = []
    for digit in DIGITS:
        available = {s: len(by_cell[digit, s]) for s in SPLITS}
        if per_class is not None and per_class > sum(available.values()):
            raise DatasetError(
                f"per-class {per_class} asks for more samples of digit {digit} than the "
                f"{sum(available.values())} FSDD recordings found"
            )
        counts = available if per_class is None else _split_counts(per_class, available, split_shares)
        for split in SPLITS:
            cell = by_cell[digit, split]
            picks = rng.choice(len(cell), size=counts[split], replace=False)
            chosen += [cell[i] for i in sorted(picks)]
    return sorted(chosen, key=lambda r: (SPLITS.index(r.split), r.digit, r.speaker, r.take))


def _assign_images(chosen: list[Recording], pools, rng) -> list[int]:
    """A distinct MNIST row of the right digit for every sample, from its split's share of MNIST."""
    images = [0] * len(chosen)
    for (digit, split), pool in pools.items():
        members = [i for i, rec in enumerate(chosen) if rec.digit == digit and rec.split == split]
        if len(members) > len(pool):
            raise DatasetError(
                f"MNIST has {len(pool)} images of digit {digit} for the {split} split, "
                f"{len(members)} samples need one each; lower --per-class"
            )
        for i, row in zip(members, rng.choice(pool, size=len(members), replace=False)):
            images[i] = int(row)
    return images


def _choose_perturbed(chosen: list[Recording], share: float, rng) -> set[int]:
    """Exactly round(share * n) samples of each split, so every split sees the requested share."""
    perturbed = set()
    for split in SPLITS:
        members = [i for i, rec in enumerate(chosen) if rec.split == split]
        count = int(np.floor(share * len(members) + 0.5))
        perturbed.update(members[j] for j in rng.choice(len(members), size=count, replace=False))
    return perturbed


def _plan_sample(rec: Recording, image: int, perturbed: bool, by_cell, pools, rng) -> PlannedSample:
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    sample = PlannedSample(
        sample_id=rec.path.stem,
        split=rec.split,
        label=rec.digit,
        speech=rec,
        mnist_row=image,
        text=template.format(word=DIGIT_WORDS[rec.digit]),
        perturbation=Perturbation(),
        render_seed=int(rng.integers(2**31)),
    )
    if not perturbed:
        return sample
    modality, kind = PERTURBED_MODALITIES[rng.integers(3)], KINDS[rng.integers(2)]
    if kind == "conflict":
        return _conflict(sample, modality, template, by_cell, pools, rng)
    return _degrade(sample, modality, rng)


def _conflict(sample: PlannedSample, modality: str, template: str, by_cell, pools, rng) -> PlannedSample:
    """The modality carries another digit, taken from the sample's own split (no leak across splits)."""
    rec, split = sample.speech, sample.split
    others = [d for d in DIGITS if d != rec.digit and (modality != "audio" or by_cell[d, split])]
    if not others:
        raise DatasetError(f"no FSDD recording of another digit in the {split} split for an audio conflict")
    other = others[rng.integers(len(others))]
    changes = {"perturbation": Perturbation(modality, "conflict", f"digit={other}")}
    if modality == "video":
        changes["mnist_row"] = int(rng.choice(pools[other, split]))
    elif modality == "audio":
        # The same voice saying another digit, so the speaker does not give the conflict away.
        candidates = [r for r in by_cell[other, split] if r.speaker == rec.speaker] or by_cell[other, split]
        changes["speech"] = candidates[rng.integers(len(candidates))]
    else:
        changes["text"] = template.format(word=DIGIT_WORDS[other])
    return _replace(sample, **changes)


def _degrade(sample: PlannedSample, modality: str, rng) -> PlannedSample:
    if modality == "video":
        how = ("noise", "occlusion")[rng.integers(2)]
        return _replace(sample, perturbation=Perturbation("video", "degraded", how))
    if modality == "audio":
        snr = SNR_CHOICES_DB[rng.integers(len(SNR_CHOICES_DB))]
        return _replace(sample, perturbation=Perturbation("audio", "degraded", f"snr={snr}dB"), snr_db=snr)
    if rng.random() < 2 / 3:
        garbled = _garble(sample.text, rng)
        return _replace(sample, perturbation=Perturbation("text", "degraded", "garbled"), text=garbled)
    fillers = " ".join(FILLERS[i] for i in rng.integers(len(FILLERS), size=rng.integers(2, 5)))
    return _replace(sample, perturbation=Perturbation("text", "degraded", "filler"), text=fillers)


def _garble(text: str, rng) -> str:
    """Replace about half the letters; redraw if a digit word survives intact."""
    while True:
        garbled = "".join(LETTERS[rng.integers(26)] if c.isalpha() and rng.random() < 0.5 else c for c in text)
        if not any(word.strip(",") in DIGIT_WORDS for word in garbled.split()):
            return garbled


def _replace(sample: PlannedSample, **changes) -> PlannedSample:
    return PlannedSample(**{**sample.__dict__, **changes})
