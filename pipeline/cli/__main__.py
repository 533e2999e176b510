"""`python -m pipeline.cli`: the same as the `precal` console script."""

from pipeline.cli import app

app()
