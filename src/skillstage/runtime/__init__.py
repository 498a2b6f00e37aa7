"""The runtime: the loader agent hosts call (`Loader`), the one routing function it serves from
(`RoutingTable.resolve`), and `sync` for hosts that read skill directories.

The names below are imported from their modules on first use: the registry file and the routing
table must not pay for importing the loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from skillstage.lazy import lazy_exports

if TYPE_CHECKING:
    from skillstage.runtime.loader import CatalogEntry, LoadedSkill, Loader
    from skillstage.runtime.routing import Resolution, UnknownSkillError

__all__ = ["CatalogEntry", "LoadedSkill", "Loader", "Resolution", "UnknownSkillError"]

__getattr__ = lazy_exports(
    __name__,
    {
        "loader": ["CatalogEntry", "LoadedSkill", "Loader"],
        "routing": ["Resolution", "UnknownSkillError"],
    },
)
