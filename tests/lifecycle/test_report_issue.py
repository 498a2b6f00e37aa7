"""Seed 001's deliverables of a promotion: the promotion report's JSON shape (against seed 001's
example), its promotion issue (against seed 001's GitHub issue template), and `report --gh`
filing it with a stand-in `gh` on PATH through the outbox.

The shape and the issue come from a real promotion of a Python component development → staging
in a project made by `init --preset seed001`, with the real tools (pytest, coverage.py, ruff,
mypy, detect-secrets), a deploy hook and the stage's smoke check.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.lifecycle.promotion_issue import issue_from_report
from skillstage.lifecycle.report import coverage_percent, promotion_report
from skillstage.store import Store
from skillstage.store.outbox import list_items
from tests.lifecycle.test_quality_gates import VENV_BIN, covered_component
from tests.skilltree import write_skill
from tests.watch.test_report import skillstage as run_skillstage

# Seed 001, "Output/Deliverables → 1. Promotion Report", as the seed writes it.
SEED_001_REPORT = """
{
  "component": "{component_name}",
  "from_stage": "{current_stage}",
  "to_stage": "{target_stage}",
  "date": "{date}",
  "quality_gates": {
    "coverage": "{coverage}%",
    "tests_passing": true,
    "linting": "clean",
    "type_checking": "clean",
    "security": "clean"
  },
  "promotion_criteria": {
    "all_met": true,
    "details": [...]
  },
  "deployment": {
    "success": true,
    "environment": "{target_stage}",
    "version": "{version}"
  },
  "validation": {
    "smoke_tests": "passed",
    "health_checks": "passed",
    "monitoring": "normal"
  }
}
"""

# Seed 001, "Step 4 → GitHub Issue Template": its headings and lines, in order.
SEED_001_TEMPLATE = """\
## Component Promotion: {component_name}

**Current Stage:** {current_stage}
**Target Stage:** {target_stage}
**Date:** {date}

### Quality Gates
- [x] Test coverage: {coverage}%
- [x] All tests passing
- [x] Linting clean
- [x] Type checking clean
- [x] Security scan clean

### Promotion Criteria
- [x] {criterion_1}
- [x] {criterion_2}
- [ ] {criterion_3} (if any pending)

### Blockers
{list any blockers or none}

### Approval
- [ ] Tech lead approval
- [ ] QA approval
- [ ] Security approval (for production)

### Rollback Plan
{describe rollback procedure}
"""

NAME = "orchestration"


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def _matches_shape(seed: Any, ours: Any, where: str = "") -> list[str]:
    """Where `ours` lacks seed 001's keys or differs in kind: a value the seed gives as a
    literal ("clean", true) must be that literal; a placeholder ("{coverage}%") a string of the
    form."""
    if isinstance(seed, dict):
        if not isinstance(ours, dict):
            return [f"{where or 'the report'} is not an object"]
        problems = [f"{where}.{key} is missing" for key in seed if key not in ours]
        for key in seed.keys() & ours.keys():
            problems += _matches_shape(seed[key], ours[key], f"{where}.{key}")
        return problems
    if isinstance(seed, list):
        return [] if isinstance(ours, list) else [f"{where} is not a list"]
    if isinstance(seed, str) and "{" in seed:
        pattern = re.escape(seed).replace(r"\{coverage\}", r"\d+(\.\d+)?")
        pattern = re.sub(r"\\\{[a-z_]+\\\}", ".+", pattern)
        return (
            [] if isinstance(ours, str) and re.fullmatch(pattern, ours) else [f"{where}={ours!r}"]
        )
    return [] if ours == seed else [f"{where}={ours!r}, seed 001 says {seed!r}"]


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """A Python component promoted development → staging, deployed, smoke-checked."""
    root = tmp_path_factory.mktemp("seed001-report")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SKILLSTAGE_DATABASE_URL", raising=False)
        api.init(root, preset="seed001")
        config = root / "skillstage.toml"
        text = config.read_text().replace(
            'path = ".claude/skills/staging/{name}"\n',
            'path = ".claude/skills/staging/{name}"\nsmoke = "true"\n',
        )
        text = re.sub(
            r'checker = "auto".*\n', f'checker = "mypy"\nmypy = "{VENV_BIN / "mypy"}"\n', text
        )
        config.write_text(text + '\n[hooks]\ndeploy = "echo dep-orchestration-1"\n')
        project = load_config_file(config)
        path = covered_component(project, NAME, 750, 1000)  # 75%: over staging's 70%
        (path / "tests/integration").mkdir()
        (path / "tests/integration/test_flow.py").write_text(
            "import pkg.mod\n\n\ndef test_flow() -> None:\n    assert pkg.mod.a1 == 1\n"
        )
        scan = [str(VENV_BIN / "detect-secrets"), "scan", "--all-files"]
        baseline = subprocess.run(scan, cwd=path, capture_output=True, text=True, check=True)
        (path / ".secrets.baseline").write_text(baseline.stdout)
        [result] = api.promote(project, [NAME], actor="tester@example.com", deploy=True)
        assert result.success, [g for g in result.gates if g.status == "fail"]
        yield project


def test_the_report_has_seed_001s_shape(promoted: Project) -> None:
    seed = json.loads(SEED_001_REPORT.replace("[...]", "[]"))
    with Store.open(promoted.database_url) as store:
        document = promotion_report(promoted, store, NAME).to_dict()
    assert _matches_shape(seed, document) == []
    assert document["quality_gates"]["coverage"] == "75%"  # the coverage gate's measured value
    assert (document["from_stage"], document["to_stage"]) == ("development", "staging")
    assert document["deployment"]["environment"] == "staging"
    assert document["deployment"]["version"] == "1.0.0"
    # Our extra keys stay beside seed 001's.
    assert document["deployment"]["deployment_id"] == "dep-orchestration-1"
    assert {"version", "digest", "promoted_by", "event_id"} <= set(document)
    gates = {g["gate"]: g for g in document["promotion_criteria"]["details"]}
    assert gates["tests"]["message"] == "pytest: 2 passed"


def test_coverage_is_seed_001s_percentage() -> None:
    assert (coverage_percent(75.0), coverage_percent(74.56), coverage_percent(100)) == (
        "75%",
        "74.56%",
        "100%",
    )


def test_the_issue_is_seed_001s_template_filled_in(promoted: Project) -> None:
    issue = api.promotion_issue(promoted, NAME)
    assert issue.title == f"Promote {NAME} to staging"
    assert issue.labels == [f"component:{NAME}", "target:staging"]
    body = issue.body.splitlines()
    # Every heading and fixed line of seed 001's template, in its order; the placeholders filled.
    today = issue.body.split("**Date:** ")[1][:10]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", today)
    expected = _fill(
        SEED_001_TEMPLATE,
        {
            "component_name": NAME,
            "current_stage": "development",
            "target_stage": "staging",
            "date": today,
            "coverage": "75",
        },
    ).splitlines()
    fixed = [line for line in expected if line and "{" not in line]
    fixed.remove("- [ ] Security approval (for production)")  # staging is not the last stage
    found = iter(body)
    for line in fixed:
        assert any(b == line or b.startswith(line + " (") for b in found), line
    assert "- [x] Test coverage: 75% (coverage: coverage 75.0% (minimum 70%))" in body
    assert "- [x] All tests passing (tests: pytest: 2 passed)" in body
    assert "- [x] Type checking clean (types: mypy: clean)" in body
    assert "**Version:** 1.0.0" in body and "**Promoted by:** tester@example.com" in body
    section = issue.body.split("### Promotion Criteria\n")[1].split("\n\n")[0].splitlines()
    assert [line.split(":")[0] for line in section] == [
        f"- [x] {gate}"
        for gate in (
            "structure",
            "schema",
            "spec",
            "conflicts",
            "dependencies",
            "security",
            "tests",
            "coverage",
            "lint",
            "types",
            "secrets",
            "integration-tests-exist",
        )
    ]
    assert issue.body.split("### Blockers\n")[1].startswith("None.\n")
    rollback = issue.body.split("### Rollback Plan\n")[1]
    assert f"No earlier version of {NAME} was in staging" in rollback
    assert "--to development" in rollback


def test_an_issue_of_a_forced_promotion_and_a_refused_one() -> None:
    gates = [
        {"gate": "tests", "status": "pass", "message": "pytest: 3 passed"},
        {"gate": "lint", "status": "fail", "message": "ruff: 2 findings"},
        {"gate": "approval", "status": "skip", "message": "not required"},
    ]
    document = {
        "component": "auth",
        "from_stage": "staging",
        "to_stage": "production",
        "date": "2026-12-07T20:00:00+00:00",
        "quality_gates": {
            "coverage": None,
            "tests_passing": True,
            "linting": "failed (forced)",
            "type_checking": "not run",
            "security": "clean",
        },
        "promotion_criteria": {
            "all_met": False,
            "details": gates,
            "forced": ["lint"],
            "reason": "hotfix INC-7",
            "approver": "lead@example.com",
            "approval_ticket": "PROJ-1",
        },
        "success": True,
        "version": "2.0.0",
        "promoted_by": "ops",
        "event_id": 7,
    }
    issue = issue_from_report(document, previous="1.4.0", final=True)
    body = issue.body.splitlines()
    assert "**Outcome:** promoted past failing gates (forced)" in body
    assert "- [ ] Test coverage: not measured" in body
    assert "- [ ] Linting: failed (forced) (lint: ruff: 2 findings)" in body
    assert "- [ ] Type checking: not run" in body
    assert "- [ ] lint: ruff: 2 findings (failed, forced past)" in body
    assert "- [ ] approval: not required (pending: skipped)" in body
    assert "- lint: ruff: 2 findings — forced past (reason: hotfix INC-7)" in body
    assert "- [x] Approved by lead@example.com (PROJ-1)" in body
    assert "- [ ] Security approval (for production)" in body
    assert any("puts auth 1.4.0 back in production" in line for line in body)

    refused = issue_from_report(
        {
            **document,
            "success": False,
            "promotion_criteria": {**document["promotion_criteria"], "forced": []},
        }
    )
    assert "**Outcome:** refused by its gates" in refused.body
    assert "- lint: ruff: 2 findings\n\nThe promotion was refused" in refused.body
    assert "Security approval" not in refused.body


# -- report --issue / --gh, as a user runs them -------------------------------------------------

FAKE_GH = """#!/bin/sh
# A stand-in for the GitHub CLI: records its arguments and the body file, prints an issue URL.
out="{record}"
n=$(ls "$out" | grep -c '^args-')
printf '%s\\n' "$@" > "$out/args-$n"
while [ $# -gt 0 ]; do
  if [ "$1" = --body-file ]; then cp "$2" "$out/body-$n"; fi
  shift
done
if [ -f "$out/../fail" ]; then
  echo "HTTP 401: Bad credentials (https://api.github.com/graphql)" >&2
  exit 1
fi
echo "Creating issue in acme/skills"
echo "https://github.com/acme/skills/issues/$((41 + n))"
"""


@pytest.fixture
def project(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A project whose skill was promoted prototype → staged; quick retries."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    config = tmp_path / "skillstage.toml"
    text = re.sub(r"\nretries = \d+", "\nretries = 1", config.read_text())
    config.write_text(re.sub(r"\nretry_base_seconds = \S+", "\nretry_base_seconds = 0", text))
    write_skill(tmp_path / ".claude/skills/prototype", "auth-v2")
    project = load_config_file(config)
    assert api.promote(project, ["auth-v2"], actor="tester")[0].success
    return project


def fake_gh(tmp_path: Path) -> Path:
    """A bin directory holding the stand-in gh; its records go to tmp_path/gh/record."""
    bin_dir, record = tmp_path / "gh/bin", tmp_path / "gh/record"
    bin_dir.mkdir(parents=True)
    record.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(FAKE_GH.replace("{record}", str(record)))
    gh.chmod(0o755)
    return bin_dir


def skillstage(project: Project, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`skillstage ARGS…` as a user runs it, with PATH `path` (where gh is found, or not)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", path)
        for name in [k for k in os.environ if k.startswith("GH_")]:
            patch.delenv(name)
        return run_skillstage(project, *args)


NO_GH_PATH = "/nonexistent"  # python runs by its full path; nothing else is needed


def test_issue_prints_the_markdown_or_writes_it(project: Project, tmp_path: Path) -> None:
    shown = skillstage(project, NO_GH_PATH, "report", "auth-v2", "--issue")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(
        "## Component Promotion: auth-v2\n\n**Current Stage:** prototype\n"
    )
    assert "- [x] All tests passing (tests: test.sh passed" in shown.stdout
    written = skillstage(
        project, NO_GH_PATH, "report", "auth-v2", "--issue", "--output", "issue.md"
    )
    assert written.returncode == 0 and written.stdout == "wrote issue.md\n"
    assert (project.root / "issue.md").read_text() == shown.stdout
    as_json = skillstage(project, NO_GH_PATH, "report", "auth-v2", "--issue", "--json")
    data = json.loads(as_json.stdout)
    assert (data["title"], data["labels"]) == (
        "Promote auth-v2 to staged",
        ["component:auth-v2", "target:staged"],
    )
    assert data["body"] == shown.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("--issue", "--failure"),
        ("--gh", "--html", "x.html"),
        ("--output", "x.md"),
        ("--issue", "--repo", "acme/skills"),
        ("--gh", "--repo", "not a repo"),
    ],
)
def test_issue_options_that_do_not_go_together(project: Project, args: tuple[str, ...]) -> None:
    done = skillstage(project, NO_GH_PATH, "report", "auth-v2", *args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "error" in done.stderr


def test_gh_creates_the_issue_through_the_outbox(project: Project, tmp_path: Path) -> None:
    bin_dir = fake_gh(tmp_path)
    done = skillstage(
        project, f"{bin_dir}:/usr/bin:/bin", "report", "auth-v2", "--gh", "--repo", "acme/skills"
    )
    assert done.returncode == 0, done.stderr
    url = "https://github.com/acme/skills/issues/41"
    written = project.state_dir / "issues"
    [markdown] = written.iterdir()
    assert done.stdout == f"created {url}  (Markdown: {markdown})\n"
    record = tmp_path / "gh/record"
    args = (record / "args-0").read_text().splitlines()
    assert args[:9] == [
        "issue",
        "create",
        "--title",
        "Promote auth-v2 to staged",
        "--label",
        "component:auth-v2",
        "--label",
        "target:staged",
        "--body-file",
    ]
    assert args[10:] == ["--repo", "acme/skills"]
    assert (record / "body-0").read_text() == markdown.read_text()
    assert markdown.read_text().startswith("## Component Promotion: auth-v2\n")

    listed = json.loads(skillstage(project, NO_GH_PATH, "outbox", "--json").stdout)
    [item] = [i for i in listed["items"] if i["kind"] == "github_issue"]
    assert (item["status"], item["output"], item["skill"]) == ("delivered", url, "auth-v2")
    assert item["target"].startswith("gh issue create --title Promote auth-v2 to staged --label")


def test_a_failing_gh_leaves_the_item_to_retry(project: Project, tmp_path: Path) -> None:
    bin_dir = fake_gh(tmp_path)
    (tmp_path / "gh/fail").write_text("")
    path = f"{bin_dir}:/usr/bin:/bin"
    done = skillstage(project, path, "report", "auth-v2", "--gh")
    assert done.returncode == 1
    assert "gh issue create failed (exit 1): HTTP 401: Bad credentials" in done.stderr
    assert "skillstage outbox --retry" in done.stderr
    assert len(list((tmp_path / "gh/record").glob("args-*"))) == 2  # 1 + [hooks] retries
    with Store.open(project.database_url) as store:
        [item] = [i for i in list_items(store) if i.kind == "github_issue"]
    assert item.status in ("pending", "failed") and "Bad credentials" in (item.last_error or "")
    assert "--repo" not in (tmp_path / "gh/record/args-0").read_text()

    (tmp_path / "gh/fail").unlink()
    retried = skillstage(project, path, "outbox", "--retry", "--json")
    assert retried.returncode == 0, retried.stderr
    with Store.open(project.database_url) as store:
        [item] = [i for i in list_items(store) if i.kind == "github_issue"]
    assert (item.status, item.output) == ("delivered", "https://github.com/acme/skills/issues/43")


def test_without_gh_the_markdown_is_written_and_the_message_says_how(project: Project) -> None:
    done = skillstage(project, NO_GH_PATH, "report", "auth-v2", "--gh", "--output", "promo.md")
    assert done.returncode == 1
    assert "gh (the GitHub CLI) is not on PATH, so the issue was not created" in done.stderr
    assert "its Markdown is in promo.md" in done.stderr
    assert "gh issue create --title 'Promote auth-v2 to staged'" in done.stderr
    assert "Traceback" not in done.stderr
    assert (project.root / "promo.md").read_text().startswith("## Component Promotion: auth-v2")
    with Store.open(project.database_url) as store:
        assert [i for i in list_items(store) if i.kind == "github_issue"] == []
