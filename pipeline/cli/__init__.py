"""The `precal` command line: every stage of the pipeline, each with its own --help.

One module per command group; this one only assembles them, in the order `precal --help` lists them.
The commands import flows, trainers and torch inside their bodies, so `precal --help` stays fast.
"""

import typer

from flows.prefect_env import apply_offline_defaults
from pipeline.cli import extract, run, store, train
from pipeline.cli.datasets import datasets_app
from pipeline.cli.server import server_app

apply_offline_defaults()

app = typer.Typer(
    help="precal: extract multimodal features once, cache them in WebDataset shards, and train "
    "fusion models with contextual calibration on them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(datasets_app, name="datasets")
app.add_typer(server_app, name="server")
for command in (
    extract.extract,
    store.status,
    store.verify,
    store.gc,
    extract.pack,
    run.demo,
    train.train,
    train.evaluate,
    train.experiment,
    train.analyse,
    run.run,
    run.schedule,
    extract.encoders,
):
    app.command()(command)
