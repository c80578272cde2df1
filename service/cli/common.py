"""What every ``modelgate`` command shares: the registry option, how it is read, and the one error
a command raises for an argument or a file it cannot use."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from registry.store import ENV_VAR, Registry

#: where ``make serve`` builds the demo registry (the Makefile's REGISTRY)
DEMO_REGISTRY = ".modelgate/demo"


class CommandError(Exception):
    """A command-line argument or file the command cannot use; printed as one line, exit 1."""


def registry_of(args: argparse.Namespace) -> Registry:
    return Registry.from_env(args.registry)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def common_options() -> argparse.ArgumentParser:
    """The options every command takes (``--registry``), as a parent parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry",
        help=f"registry directory (default: ${ENV_VAR}, else .modelgate/registry)",
    )
    return common


if TYPE_CHECKING:
    #: the subcommands' parsers, as argparse hands them out
    Verbs = argparse._SubParsersAction[argparse.ArgumentParser]
