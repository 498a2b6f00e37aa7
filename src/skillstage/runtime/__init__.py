"""The runtime: the loader agent hosts call (`Loader`), the one routing function it serves from
(`RoutingTable.resolve`), and `sync` for hosts that read skill directories."""

from __future__ import annotations

from skillstage.runtime.loader import CatalogEntry, LoadedSkill, Loader
from skillstage.runtime.routing import Resolution, UnknownSkillError

__all__ = ["CatalogEntry", "LoadedSkill", "Loader", "Resolution", "UnknownSkillError"]
