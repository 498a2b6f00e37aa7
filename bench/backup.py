"""How fast a backup and a restore are: 1,000 skills (live in production, each with its archive
entry) and a 1,000,000-execution SQLite store, next to `tar czf` of the same tree plus the sqlite3
shell's `.backup` of the same store (and, for the restore, `tar xzf` plus `.restore`).

skillstage's backup is `api.backup_create` (the function behind `skillstage backup create`): the
store's file read in place in a read transaction that freezes it (its sha256 and fingerprint in a
second thread, while the trees are hashed and streamed), every file hashed into the manifest, the
store compressed on every core, one checksummed file written atomically and fsynced. Its restore is
`api.backup_restore(..., force=True)` after the tree is deleted: check the file's checksum, take the
pre-restore backup of the current state (a backup of its own, taken while every member is checked
and extracted), write the restore's journal, put the store back, swap each skill directory in under
its lock, record 1,000 events. The peers do less (no checksums, no manifest, the store not
compressed, no pre-restore copy, no journal, no events): the goal is skillstage within 1.5x of them.
Contenders take turns within each round, and the best of the rounds counts.

The store is built once (with bench/readiness.py's builder) and kept in
`~/.cache/skillstage-bench/backup/`.

Run: `.venv/bin/python bench/backup.py [--skills N] [--executions N] [--rounds N]
[--store-compression-level 0-9] [--json]`.
Targets are reported, not asserted: the exit status is 0 (1 when a restore does not give back
the same files).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import readiness
from skillstage import api
from skillstage.config import DEFAULT_CONFIG_TOML, Project, load_config_file
from skillstage.lifecycle.archive import archive_path
from skillstage.skill.read import read_skill

SKILLS = 1000
EXECUTIONS = 1_000_000
ROUNDS = 3
TARGET_RATIO = 1.5
SQLITE_SHELL = "/usr/bin/sqlite3"


def _project(root: Path, database: Path, skills: int, level: int = 1) -> Project:
    root.mkdir(parents=True)
    marker = "store_compression_level = 1"
    if marker not in DEFAULT_CONFIG_TOML:
        raise SystemExit("bench set-up: the default config's [backups] level moved")
    text = DEFAULT_CONFIG_TOML.replace(marker, f"store_compression_level = {level}")
    (root / "skillstage.toml").write_text(text)
    project = load_config_file(root / "skillstage.toml")
    project.state_dir.mkdir()
    shutil.copyfile(database, project.state_dir / "state.db")
    for index in range(skills):
        name = readiness.skill_name(index)
        live = project.stage_path("production", name)
        readiness.write_skill(live, name)
        skill = read_skill(live)
        entry = archive_path(project, name, skill.version, skill.digest)
        entry.parent.mkdir(parents=True)
        shutil.copytree(live, entry)
        for path in (entry, *entry.rglob("*")):
            path.chmod(path.stat().st_mode & ~0o222)
    return project


def _tree_digest(project: Project) -> str:
    digest = hashlib.sha256()
    for top in (project.root / ".claude", project.state_dir / "archive"):
        for path in sorted(top.rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(project.root)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def _remove_tree(project: Project) -> None:
    subprocess.run(["chmod", "-R", "u+w", str(project.state_dir / "archive")], check=True)
    shutil.rmtree(project.root / ".claude")
    shutil.rmtree(project.state_dir / "archive")


def _timed(call: Callable[[], Any]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def _peer_backup(project: Project, out: Path) -> None:
    out.mkdir(exist_ok=True)
    subprocess.run(
        ["tar", "czf", str(out / "tree.tar.gz"), ".claude", ".skillstage/archive"],
        cwd=project.root,
        check=True,
    )
    (out / "state.db").unlink(missing_ok=True)
    subprocess.run(
        [SQLITE_SHELL, str(project.state_dir / "state.db"), f".backup {out / 'state.db'}"],
        check=True,
    )


def _peer_restore(project: Project, out: Path) -> None:
    subprocess.run(["tar", "xzf", str(out / "tree.tar.gz")], cwd=project.root, check=True)
    subprocess.run(
        [SQLITE_SHELL, str(project.state_dir / "state.db"), f".restore {out / 'state.db'}"],
        check=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--skills", type=int, default=SKILLS)
    parser.add_argument("--executions", type=int, default=EXECUTIONS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument(
        "--store-compression-level",
        type=int,
        default=1,
        help="[backups] store_compression_level of the project (default 1, as the config's)",
    )
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args(argv)
    for key in [k for k in os.environ if k.startswith("SKILLSTAGE_")]:
        del os.environ[key]
    say: Callable[[str], None] = (lambda _: None) if options.json else partial(print, flush=True)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = cache / "skillstage-bench" / "backup"
    failed = False
    results: dict[str, Any] = {"cpus": os.cpu_count(), "rounds": options.rounds}
    with tempfile.TemporaryDirectory(prefix="skillstage-bench-backup-") as scratch:
        root = Path(scratch)
        name = readiness.skill_name(options.skills // 2)
        template = root / "template" / name
        readiness.write_skill(template, name)
        skill = read_skill(template)
        layout = readiness.Layout(
            options.executions, options.skills, name, skill.digest, skill.frontmatter_dict()
        )
        database, _facts, _built = readiness.cached_store(cache, layout, rebuild=False, say=say)
        say(f"project: {options.skills:,} skills, store {database.stat().st_size / 1e6:.0f} MB")
        level = options.store_compression_level
        project = _project(root / "project", database, options.skills, level)
        results["store_compression_level"] = level
        expected = _tree_digest(project)
        peer_out = root / "peer"
        times: dict[str, list[float]] = {
            k: [] for k in ("backup", "restore", "peer_backup", "peer_restore")
        }
        sizes: dict[str, int] = {}
        for number in range(options.rounds):
            say(f"round {number + 1}/{options.rounds} …")
            began = time.perf_counter()
            made = api.backup_create(project)
            times["backup"].append(time.perf_counter() - began)
            sizes["skillstage"] = made.backup.size
            times["peer_backup"].append(_timed(lambda: _peer_backup(project, peer_out)))
            sizes["peer"] = sum(p.stat().st_size for p in peer_out.iterdir())
            _remove_tree(project)
            began = time.perf_counter()
            api.backup_restore(project, made.backup.id, force=True)
            times["restore"].append(time.perf_counter() - began)
            if _tree_digest(project) != expected:
                failed = True
                say("✗ the restore did not give back the same files")
            _remove_tree(project)
            times["peer_restore"].append(_timed(lambda: _peer_restore(project, peer_out)))
            for backup in api.backup_list(project):
                backup.path.unlink()  # each round starts from none
        best = {k: min(v) for k, v in times.items()}
        results.update(
            skills=options.skills,
            executions=options.executions,
            store_mb=round(database.stat().st_size / 1e6, 1),
            seconds={k: [round(s, 2) for s in v] for k, v in times.items()},
            best=best,
            sizes_mb={k: round(v / 1e6, 1) for k, v in sizes.items()},
            backup_ratio=round(best["backup"] / best["peer_backup"], 2),
            restore_ratio=round(best["restore"] / best["peer_restore"], 2),
            target_ratio=TARGET_RATIO,
            restore_same_files=not failed,
        )
    if options.json:
        print(json.dumps(results, indent=2))
    else:
        print(
            f"\n{results['skills']:,} skills, {results['executions']:,} executions "
            f"(store {results['store_mb']} MB, compressed at level {level}), best of "
            f"{options.rounds} rounds:\n"
            f"  backup   skillstage {best['backup']:.2f} s, tar czf + sqlite3 .backup "
            f"{best['peer_backup']:.2f} s: {results['backup_ratio']}x (goal ≤ {TARGET_RATIO}x)\n"
            f"  restore  skillstage {best['restore']:.2f} s, tar xzf + sqlite3 .restore "
            f"{best['peer_restore']:.2f} s: {results['restore_ratio']}x\n"
            f"  size     skillstage {results['sizes_mb']['skillstage']} MB (one file, "
            f"compressed), peer {results['sizes_mb']['peer']} MB (store uncompressed)\n"
            f"  every round: {results['seconds']}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
