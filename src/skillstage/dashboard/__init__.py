"""The web dashboard and the static skill report: server-rendered pages over `skillstage.api`.

`render_overview` and `render_skill` return a whole HTML page; `routes.router` serves them (and
the few actions: approve, abort a rollout, roll back) from `skillstage serve`, and
`skillstage report NAME --html FILE` writes the skill page as one self-contained file. Importing
this package imports nothing heavy: Jinja2 and FastAPI load with the module that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skillstage.dashboard.pages import ActionContext, render_overview, render_skill

__all__ = ["ActionContext", "render_overview", "render_skill"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from skillstage.dashboard import pages

        return getattr(pages, name)
    raise AttributeError(name)
