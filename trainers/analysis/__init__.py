"""Analyses of trained runs: modality removal, corruption, training dynamics, detection of the unreliable
modality, pictures, and the report. Entry points: `trainers.analysis.analyse.analyse(path)` (a run or an
experiment folder) and `trainers.analysis.analyse.analyse_run(run_dir)`. Kept import-free so that the
training loop can import `trainers.analysis.dynamics` without matplotlib and scikit-learn."""
