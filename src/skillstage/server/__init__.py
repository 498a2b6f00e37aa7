"""`skillstage serve`: the REST API under /v1, the dashboard and /metrics, over `skillstage.api`.

Nothing here decides anything: routes parse a request, call the same `api` function the CLI
calls, and render the result as JSON or HTML. Importing this package imports FastAPI, so only
`skillstage serve` (and library users who want the app) do.
"""

from skillstage.server.app import create_app

__all__ = ["create_app"]
