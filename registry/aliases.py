"""Aliases (champion, challenger) as a fold over the append-only audit history."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Alias = Literal["champion", "challenger"]
ALIASES: tuple[Alias, ...] = ("champion", "challenger")


class AuditEntry(BaseModel):
    """One line of a model's history: who did what, when, from which version to which, and why."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    seq: int
    at: datetime
    actor: str
    action: Literal["push", "promote", "rollback"]
    alias: Alias | None = None
    from_version: int | None = Field(default=None, alias="from")
    to_version: int | None = Field(default=None, alias="to")
    reason: str = ""


class Aliases(BaseModel):
    """Where each alias points now. ``champion_stack`` holds every champion still rollback-able."""

    model_config = ConfigDict(frozen=True)

    champion: int | None = None
    challenger: int | None = None
    champion_stack: tuple[int, ...] = ()

    def get(self, alias: Alias) -> int | None:
        return self.champion if alias == "champion" else self.challenger


def fold(entries: list[AuditEntry]) -> Aliases:
    """Replay the history. Promoting the current challenger to champion clears the challenger."""
    stack: list[int] = []
    challenger: int | None = None
    for entry in entries:
        if entry.action == "promote" and entry.alias == "champion":
            assert entry.to_version is not None
            stack.append(entry.to_version)
            if challenger == entry.to_version:
                challenger = None
        elif entry.action == "promote" and entry.alias == "challenger":
            challenger = entry.to_version
        elif entry.action == "rollback":
            stack.pop()
    return Aliases(champion=stack[-1] if stack else None, challenger=challenger, champion_stack=tuple(stack))
