"""`precal server start | status | stop`: a local Prefect server that every later command reuses."""

from __future__ import annotations

import typer

from pipeline.cli.common import console, fail

server_app = typer.Typer(
    help="A local Prefect server (loopback only) that precal flows report to instead of starting a temporary "
    "one per command; its UI keeps every run. PREFECT_API_URL, when set, still wins.",
    no_args_is_help=True,
)


@server_app.command("start")
def start(
    port: int = typer.Option(0, help="Port on 127.0.0.1 (default: a free one)."),
    timeout: float = typer.Option(90.0, help="Seconds to wait for the server to answer."),
):
    """Start the server in the background (or find the one already running) and wait until it answers."""
    from flows.server import ServerError, start_server

    try:
        state = start_server(port or None, timeout)
    except ServerError as err:
        fail(str(err), code=1)
    console.print(state.message(), soft_wrap=True, highlight=False)
    console.print(f"log: {state.log}", soft_wrap=True, highlight=False)


@server_app.command("status")
def status():
    """Say whether the server precal started is running, and its URL; exit 1 when it is not."""
    from flows.server import server_status

    state = server_status()
    console.print(state.message(), soft_wrap=True, highlight=False)
    if state.state != "running":
        raise typer.Exit(1)


@server_app.command("stop")
def stop():
    """Stop the server precal started and forget it (a dead server's record is removed too)."""
    from flows.server import ServerError, stop_server

    try:
        state = stop_server()
    except ServerError as err:
        fail(str(err), code=1)
    said = {
        "running": f"stopped the server at {state.url} (pid {state.pid})",
        "not answering": f"stopped pid {state.pid}, which no longer answered at {state.url}",
        "died": f"the server (pid {state.pid}) had already stopped; removed its record",
        "not running": "no server was running",
    }
    console.print(said[state.state], soft_wrap=True, highlight=False)
