"""precal: pipeline."""
