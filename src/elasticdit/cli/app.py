"""The Typer application and what every command shares: one-line errors, JSON output, common options."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import ElasticDiTError

app = typer.Typer(
    name="elasticdit",
    help="Take an ElasticDiT checkpoint to phones: inspect it, export ExecuTorch / Core ML / ONNX bundles with "
    "every operating point sharing one copy of the weights, verify them, profile them and plan.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Wide enough for tables when piped (a CI log); the terminal's width otherwise.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

CheckpointArg = Annotated[
    Path | None,
    typer.Argument(
        help="Checkpoint (.safetensors, or .pt/.bin read with weights_only) or a config .json; "
        "default: the demo checkpoint shipped in the package.",
        show_default=False,
    ),
]
ResolutionOpt = Annotated[
    tuple[int, int] | None,
    typer.Option(
        "--resolution", help="Output image HEIGHT WIDTH in pixels (default: the checkpoint's).", show_default=False
    ),
]
ResolutionsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--resolution",
        help="Image HEIGHTxWIDTH in pixels, e.g. 1024x1024; repeat it for methods at several resolutions in one "
        "bundle (the first is the default; default: the checkpoint's).",
        show_default=False,
    ),
]
ResolutionChoiceOpt = Annotated[
    str | None,
    typer.Option(
        "--resolution", help="HEIGHTxWIDTH, one of the bundle's resolutions (default: its first).", show_default=False
    ),
]


def parse_resolution(text: str) -> tuple[int, int]:
    """'768x1344' -> (768, 1344); a named error for anything else."""
    from ..errors import ConfigError

    h, sep, w = text.strip().lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit() or int(h) <= 0 or int(w) <= 0:
        raise ConfigError(f"--resolution {text!r} is not HEIGHTxWIDTH in pixels (e.g. 1024x1024)")
    return int(h), int(w)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")]


def reports_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Named errors and OS errors become one line on stderr and exit code 1; Ctrl-C exits 130."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ElasticDiTError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except OSError as exc:  # disk full, permissions, a vanished file: a line, not a traceback
            text = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
            err.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return run


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def default_checkpoint() -> Path:
    from ..demo_checkpoint import demo_checkpoint_path

    return demo_checkpoint_path()


SourceArg = Annotated[
    Path | None,
    typer.Argument(
        help="A bundle folder (android: ExecuTorch runtime; onnx: ONNX Runtime) or a checkpoint (PyTorch reference); "
        "default: the demo checkpoint.",
        show_default=False,
    ),
]
StepsOpt = Annotated[int | None, typer.Option(help="Denoise steps (default: the scheduler's).", show_default=False)]
