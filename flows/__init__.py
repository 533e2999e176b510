"""precal: Prefect flows wiring the stages (the work itself lives in the other packages)."""

from flows.prefect_env import apply_offline_defaults

apply_offline_defaults()
