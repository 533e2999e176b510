"""Whole CLI calls as a user runs them (each a fresh `precal` process, wall time), and lhotse beside them.

  noop_full      `precal extract` of the full AV-digits set (default encoders), everything already done,
                 no Prefect server running                                         target <= 2 s
  status         `precal status` of that store                                   target <= 1 s
  pack_noop      `precal pack` of that store's unchanged pack
  fsdd_precal    first `precal extract` of the FSDD recordings: audio only, fbank, 128 mel bins, 16 kHz,
                 25/10 ms windows, 2 decoding workers, into an empty store (temporary Prefect server)
  fsdd_lhotse    the same with lhotse: a CutSet of the recordings resampled to 16 kHz,
                 compute_and_store_features(Fbank, 128 bins, num_jobs=2), OMP_NUM_THREADS=1
                 target: fsdd_lhotse / fsdd_precal >= 1.5
  then with `precal server start` running: fsdd_precal again, and a small extraction (20 recordings) whose
  fixed cost (wall time minus the extraction's own seconds) has the target <= 3 s.

lhotse is not a project dependency: it is installed on first use into its own virtualenv (--lhotse-venv),
with torch from the project's constraints. Setup (building the AV-digits set from ../shared/data,
extracting and packing it once) is timed apart. Every call's wall time is listed (the fastest counts for
the ratios); the quick commands interleave for --repeat rounds, the FSDD runs interleave precal and
lhotse for --rounds rounds.

    python benchmarks/cli_bench.py [--rounds 2] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CACHE = ROOT / "benchmarks" / ".cache"
PRECAL = Path(sys.executable).with_name("precal")
FBANK = ["-m", "audio", "-e", "audio=fbank", "-o", "audio.n_mels=128", "--workers", "2", "--allow-outside-root"]
LHOTSE_WHEEL = Path("/tmp/wh/lhotse-1.33.0-py3-none-any.whl")
LHOTSE_RUN = """
import sys
from pathlib import Path
from lhotse import CutSet, Fbank, FbankConfig, Recording, RecordingSet

if __name__ == "__main__":  # lhotse's workers are spawned: they import this module again
    files, out = sorted(Path(sys.argv[1]).glob("*.wav")), Path(sys.argv[2])
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(Recording.from_file(f) for f in files))
    fbank = Fbank(FbankConfig(num_mel_bins=128, sampling_rate=16000, frame_length=0.025, frame_shift=0.01))
    cuts = cuts.resample(16000).compute_and_store_features(extractor=fbank, storage_path=out / "feats", num_jobs=2)
    cuts.to_file(out / "cuts.jsonl.gz")
    print(len(cuts))
"""


@dataclass
class Call:
    wall: float  # seconds, start to exit
    output: str


def run(command: list, env: dict, timeout: float = 3600) -> Call:
    """One call, timed; a failed call stops the benchmark with its output."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-3000:]
        raise SystemExit(f"{' '.join(map(str, command))} failed ({done.returncode}):\n{output}")
    return Call(wall, done.stdout + done.stderr)


class Results(dict):
    """{measure: [wall seconds of each call]} and a few facts about the run."""

    def add(self, key: str, call: Call) -> Call:
        self.setdefault(key, []).append(call.wall)
        return call

    def best(self, key: str) -> float:
        return min(self[key])


def extraction_seconds(output: str) -> float:
    """The extraction's own seconds, from the summary table the command prints (last column)."""
    rows = [line for line in output.splitlines() if line.startswith("│ audio")]
    return sum(float(row.split("│")[-2]) for row in rows)


def precal_env(home: Path) -> dict:
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "COLUMNS": "200",
    }
    env.pop("PREFECT_API_URL", None)
    return env


def avdigits(folder: Path, env: dict) -> Path:
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        run(
            [
                PRECAL,
                "datasets",
                "avdigits",
                "--fsdd",
                SHARED / "fsdd" / "recordings",
                "--mnist",
                SHARED / "mnist" / "mnist_5k.csv.gz",
                "--out",
                folder,
            ],
            env,
        )
    return manifest


def fsdd_manifest(folder: Path, limit: int | None = None) -> Path:
    """The FSDD recordings as a manifest (absolute paths: they stay in ../shared): label = the spoken digit."""
    files = sorted((SHARED / "fsdd" / "recordings").glob("*.wav"))[:limit]
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / f"fsdd-{len(files)}.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sample_id", "split", "label", "audio"])
        writer.writerows([p.stem, "train", p.stem.split("_")[0], str(p)] for p in files)
    return manifest


def lhotse_python(venv: Path) -> Path:
    """The lhotse virtualenv's interpreter; created with lhotse (torch from the project's constraints) if missing."""
    python = venv / "bin" / "python"
    if not (python.is_file() and subprocess.run([python, "-c", "import lhotse"], capture_output=True).returncode == 0):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        wheel = str(LHOTSE_WHEEL) if LHOTSE_WHEEL.is_file() else "lhotse"
        # urllib3: lhotse imports it without declaring it
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "-q",
                "-c",
                ROOT / "constraints.txt",
                wheel,
                "torch",
                "torchaudio",
                "urllib3",
            ],
            check=True,
        )
    return python


def fsdd_rounds(manifest: Path, python: Path, env: dict, rounds: int, work: Path, results: Results) -> None:
    lhotse_env = {**env, "OMP_NUM_THREADS": "1"}
    for n in range(rounds):
        store, out = work / f"precal-{n}", work / f"lhotse-{n}"
        results.add("fsdd_precal", run([PRECAL, "extract", "--manifest", manifest, "--store", store, *FBANK], env))
        out.mkdir()
        results.add("fsdd_lhotse", run([python, "-c", LHOTSE_RUN, SHARED / "fsdd" / "recordings", out], lhotse_env))
        shutil.rmtree(store)
        shutil.rmtree(out)


def with_server(env: dict, manifest: Path, small: Path, work: Path, rounds: int, results: Results) -> None:
    run([PRECAL, "server", "start"], env)
    try:
        for n in range(rounds):
            call = results.add(
                "small_server",
                run([PRECAL, "extract", "--manifest", small, "--store", work / f"small-{n}", *FBANK], env),
            )
            results.setdefault("small_fixed_cost_server", []).append(call.wall - extraction_seconds(call.output))
        for n in range(rounds):
            results.add(
                "fsdd_precal_server",
                run([PRECAL, "extract", "--manifest", manifest, "--store", work / f"server-{n}", *FBANK], env),
            )
    finally:
        run([PRECAL, "server", "stop"], env)


def shown(value):
    if isinstance(value, list):
        return [round(v, 2) for v in value]
    return round(value, 3) if isinstance(value, float) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=CACHE / "avdigits-full", help="AV-digits folder (built if missing)"
    )
    parser.add_argument("--lhotse-venv", type=Path, default=Path("/tmp/lhotse-venv"))
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the FSDD extractions")
    parser.add_argument("--repeat", type=int, default=3, help="calls of each quick command (the fastest counts)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cli-bench-") as tmp:
        work = Path(tmp)
        env = precal_env(work / "prefect")
        manifest = avdigits(args.data, env)
        store = CACHE / "avdigits-full-store"  # extracted once, then kept: the no-op is what is measured
        results = Results(avdigits_samples=sum(1 for _ in open(manifest)) - 1)
        results.add(
            "setup_extract", run([PRECAL, "extract", "--manifest", manifest, "--store", store, "--workers", "1"], env)
        )
        run([PRECAL, "pack", "--manifest", manifest, "--store", store], env)
        for _ in range(args.repeat):
            results.add("noop_full", run([PRECAL, "extract", "--manifest", manifest, "--store", store], env))
            results.add("status", run([PRECAL, "status", "--store", store], env))
            results.add("pack_noop", run([PRECAL, "pack", "--manifest", manifest, "--store", store], env))
        fsdd = fsdd_manifest(work / "fsdd")
        results["fsdd_recordings"] = sum(1 for _ in open(fsdd)) - 1
        fsdd_rounds(fsdd, lhotse_python(args.lhotse_venv), env, args.rounds, work, results)
        with_server(env, fsdd, fsdd_manifest(work / "small", 20), work, args.rounds, results)
    results["ratio_lhotse_over_precal"] = round(results.best("fsdd_lhotse") / results.best("fsdd_precal"), 3)
    results["ratio_lhotse_over_precal_server"] = round(
        results.best("fsdd_lhotse") / results.best("fsdd_precal_server"), 3
    )
    results["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    results["cpus"] = os.cpu_count()
    for key, value in results.items():
        print(f"{key:34} {shown(value)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
