"""What an extraction did: per modality (ok, failed, skipped, shards, time, errors) and for the run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ModalitySummary:
    modality: str
    encoder: str
    fingerprint: str
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    shards_written: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def add(self, part: ModalitySummary) -> None:
        """Count a part of this modality's extraction (a chunk, a block) in; skipped ones are the caller's."""
        self.ok += part.ok
        self.failed += part.failed
        self.shards_written += part.shards_written
        self.seconds += part.seconds
        self.errors.extend(part.errors)


def summary_dict(summary: ModalitySummary) -> dict:
    return asdict(summary)


@dataclass
class ExtractionReport:
    modalities: list[ModalitySummary]
    rejected: list[str] = field(default_factory=list)  # manifest rows left out, with their reasons

    def totals(self) -> dict[str, int]:
        totals = {k: sum(getattr(s, k) for s in self.modalities) for k in ("ok", "failed", "skipped")}
        return {**totals, "rejected_rows": len(self.rejected)}

    def failed_share(self) -> float:
        """Failed extractions plus rejected manifest rows, over everything this run considered
        (skipped ones included, so a re-run with nothing new does not count old failures as all)."""
        t = self.totals()
        bad = t["failed"] + t["rejected_rows"]
        considered = t["ok"] + t["skipped"] + bad
        return bad / considered if considered else 0.0

    def to_dict(self) -> dict:
        return {
            "modalities": [summary_dict(s) for s in self.modalities],
            "totals": self.totals(),
            "rejected": self.rejected,
            "failed_share": self.failed_share(),
        }
