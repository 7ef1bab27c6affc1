"""Command-line adapters: options -> library call -> rendering. No analysis logic lives here."""

from nsysparse.cli import compare, gaps, generate, inspect, models, report, rules, structure  # noqa: F401  (registers commands)
from nsysparse.cli.app import cli


def main() -> None:
    cli(prog_name="nsysparse")


__all__ = ["cli", "main"]
