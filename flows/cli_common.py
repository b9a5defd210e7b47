"""What every `mersemi` command shares: the app, consoles, common options, error handling."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Semi-supervised multimodal emotion recognition pipeline.")
out = Console()
err = Console(stderr=True)

WorkspaceOpt = Annotated[Path | None, typer.Option(
    "--workspace", "-w", envvar="MERSEMI_WORKSPACE",
    help="workspace folder [default: ./mersemi-workspace]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the summary as one JSON object")]
TaskRunnerOpt = Annotated[str, typer.Option(
    help="where feature shards run: processes (a pool on this host) or dask (a Dask cluster)")]
DaskAddressOpt = Annotated[str | None, typer.Option(
    help="scheduler address of an existing Dask cluster [default: start a local one]")]
PseudoRatioOpt = Annotated[str | None, typer.Option(
    help="pseudo-labels drawn afresh each epoch, as a multiple of the fold's human labels, or "
         "'all' (every one, every epoch) [default: the pipeline's default]")]


def pseudo_ratio_arg(value: str | None) -> dict:
    """The `pseudo_ratio` parameter of a --pseudo-ratio value (none given: the default)."""
    if value is None:
        return {}
    if value.strip().lower() == "all":
        return {"pseudo_ratio": None}
    try:
        return {"pseudo_ratio": float(value)}
    except ValueError:
        raise ValueError(f"--pseudo-ratio {value!r}: give a number (e.g. 2) or 'all'") from None


def fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run_guarded(fn, *args, **kwargs):
    """Turn the errors a user can act on into a message and an exit code, not a traceback."""
    from pydantic import ValidationError

    from storage.catalog import CatalogError
    from storage.ingest import LayoutError
    from storage.workspace import WorkspaceBusy

    try:
        return fn(*args, **kwargs)
    except (LayoutError, ValidationError, ValueError) as exc:
        message, code = str(exc), 2
    except (WorkspaceBusy, CatalogError) as exc:
        message, code = str(exc), 3
    fail(message, code)      # outside the except block: the traceback is already released
