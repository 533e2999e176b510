"""precal: trainers."""
