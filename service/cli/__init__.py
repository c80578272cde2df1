"""The ``modelgate`` command line: its commands, the demo traffic simulator and the demo's retraining."""

from service.cli.main import main

__all__ = ["main"]
