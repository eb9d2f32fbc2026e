"""CLI commands for keys, the audit chain and retention (being written)."""

from __future__ import annotations

import argparse

from server.settings import Settings

__all__ = ["handle", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this area's commands to the ``fairwatch`` parser."""


def handle(args: argparse.Namespace, settings: Settings) -> int | None:
    """Run the command if it is one of this area's; None otherwise."""
    return None
