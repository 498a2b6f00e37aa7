"""Seed 002 §6's one registry file, `skills_registry.json`, for tools that read the registry
without Python. An export, rewritten whole (atomically) after every move and rollout change: the
store stays the truth, and a lost or stale file is rebuilt by the next change, `rollout tick`
or `sync`."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

from skillstage.config import Project
from skillstage.store import Store, controls
from skillstage.store import rollouts as store_rollouts

REGISTRY_FORMAT = "1.0"


def _iso(at: dt.datetime | None) -> str | None:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at is not None else None


def _relative(project: Project, path: os.PathLike[str] | str) -> str:
    try:
        return os.path.relpath(path, project.root)
    except ValueError:
        return str(path)


def registry_document(project: Project, store: Store) -> dict[str, Any]:
    """The registry as seed 002 shapes it, from the store."""
    order = {stage: index for index, stage in enumerate(project.config.stages)}
    with store.reading() as tx:
        generation = store_rollouts.generation(tx)
        rows = [r for r in store_rollouts.routing_rows(tx) if r.stage in order]
        moves = store_rollouts.last_moves(tx)
        off = controls.disabled_routes(tx)
    skills: dict[str, Any] = {}
    # A skill in several stages is registered at the furthest one (its promotion state); the
    # others are listed under `stages`.
    for row in sorted(rows, key=lambda r: (r.name, order[r.stage])):
        entry = skills.setdefault(row.name, {"stages": {}})
        location = project.stage_path(row.stage, row.name)
        metadata = row.frontmatter.get("metadata")
        agent = metadata.get("primary_agent") if isinstance(metadata, dict) else None
        rollout = row.rollout
        entry.update(
            {
                "promotion_state": row.stage,
                "location": _relative(project, location) + "/",
                "primary_agent": agent or project.config.runtime.primary_agent,
                "metrics_path": _relative(project, project.metrics_inbox)
                + f"/{row.name}_executions.jsonl",
                "last_promotion": _iso(moves.get(row.name, {}).get("promote")),
                "last_rollback": _iso(moves.get(row.name, {}).get("rollback")),
                "version": row.version,
                "digest": row.digest,
                "rollout": None
                if rollout is None
                else {
                    "id": rollout.id,
                    "state": rollout.state,
                    "candidate_version": rollout.candidate_version,
                    "candidate_digest": rollout.candidate_digest,
                    "weight": rollout.weight,
                    "steps": rollout.steps,
                    "segments": rollout.segments,
                    "group_id": rollout.group_id,
                },
            }
        )
        disabled = bool(off.get(row.name, set()) & {row.stage, controls.EVERY_STAGE})
        entry["stages"][row.stage] = {
            "version": row.version,
            "digest": row.digest,
            "location": _relative(project, location) + "/",
            "disabled": disabled,  # the kill switch: nothing serves it there
        }
        entry["disabled"] = disabled
    # `generation`: the store's routing generation it was written at, so a stale file (its
    # writer killed after the change committed) is told apart and rewritten.
    return {"version": REGISTRY_FORMAT, "generation": generation, "skills": skills}


_deferred = threading.local()


@contextlib.contextmanager
def one_export(project: Project, store: Store) -> Iterator[None]:
    """Within the block, exports wait and the registry is written once at its end (a promotion
    of 1,000 skills rewrote the whole file 1,000 times). A block cut short by a kill leaves the
    file behind the store's generation, and `refresh_registry` rewrites it."""
    if getattr(_deferred, "active", False):
        yield
        return
    _deferred.active, _deferred.pending = True, False
    try:
        yield
    finally:
        pending = _deferred.pending
        _deferred.active = _deferred.pending = False
        if pending:
            # As after a single move, a file that cannot be written does not fail what was done;
            # the next change, `rollout tick` or `sync` writes it.
            with contextlib.suppress(OSError):
                export_registry(project, store)


def export_registry(project: Project, store: Store) -> None:
    """Rewrite the registry file atomically from the store (at the end of a `one_export` block,
    when in one)."""
    from skillstage.lifecycle.fs import write_atomically

    if getattr(_deferred, "active", False):
        _deferred.pending = True
        return

    document = registry_document(project, store)
    path = project.registry_file
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(document, indent=2, sort_keys=False) + "\n")


def refresh_registry(project: Project, store: Store) -> bool:
    """Rewrite the registry file when it is missing or older than the store's routing
    generation (a change whose writer died before exporting it); True when it was rewritten."""
    path = project.registry_file
    try:
        written = json.loads(path.read_text(encoding="utf-8")).get("generation")
    except (OSError, ValueError, AttributeError):
        written = None
    with store.reading() as tx:
        current = store_rollouts.generation(tx)
    if written == current:
        return False
    export_registry(project, store)
    return True
