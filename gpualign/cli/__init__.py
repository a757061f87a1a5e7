"""Command line: the typer app and the console-script entry point."""

from gpualign.cli._app import app, main

__all__ = ["app", "main"]
