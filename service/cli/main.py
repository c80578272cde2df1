"""The ``modelgate`` command: demo, serve, simulate, and the registry, routing and log verbs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from registry.errors import ModelNotFound, RegistryError
from registry.store import ENV_VAR
from service.cli import gateway_commands, log_commands, registry_commands
from service.cli.common import DEMO_REGISTRY, CommandError, common_options


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(prog="modelgate", description=__doc__)
    verbs = parser.add_subparsers(dest="command", required=True)
    for module in (gateway_commands, registry_commands, log_commands):
        module.add_commands(verbs, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (RegistryError, CommandError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, ModelNotFound) and _default_registry(args) and Path(DEMO_REGISTRY).is_dir():
            print(f"hint: make serve's demo registry is {DEMO_REGISTRY}: add --registry {DEMO_REGISTRY} "
                  f"(or export {ENV_VAR}={DEMO_REGISTRY})", file=sys.stderr)  # fmt: skip
        return 1


def _default_registry(args: argparse.Namespace) -> bool:
    """Whether the command read the default registry: no --registry, no MODELGATE_REGISTRY."""
    return getattr(args, "registry", None) is None and not os.environ.get(ENV_VAR)
