#!/usr/bin/env bash
# The main job, end to end, in a fresh temporary workspace on the embedded SQLite store:
# create a project, find what is wrong with two staged skills, fix it, and list them with their age.
set -euo pipefail

scripts=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
workspace=$(mktemp -d "${TMPDIR:-/tmp}/skillstage-demo.XXXXXX")
cd "$workspace"
step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"; }

step "Create a project in a git repository" "git init; skillstage init"
git init -q
git config user.name "Demo User"
git config user.email "demo@example.com"
skillstage init
echo ".skillstage/" > .gitignore

stage=.claude/skills/staging
mkdir -p "$stage/auth-v2" "$stage/logging-v3"
cat > "$stage/auth-v2/SKILL.md" <<'SKILL'
---
name: auth-v2
version: 2.0.0
description: Sign users in with OAuth. Use when a task needs an authenticated session.
author: Platform Team
tags: [auth, oauth]
---
# Authentication

Run `execute.sh` with the provider name. See [the provider notes](references/providers.md).
SKILL
mkdir -p "$stage/auth-v2/references"
echo "# Providers" > "$stage/auth-v2/references/providers.md"
printf '#!/bin/bash\necho "signed in"\n' > "$stage/auth-v2/execute.sh"
printf '#!/bin/bash\n./execute.sh >/dev/null && echo "tests passed"\n' > "$stage/auth-v2/test.sh"
chmod +x "$stage/auth-v2/execute.sh" "$stage/auth-v2/test.sh"

# A skill with the mistakes seed 000's troubleshooting section describes.
cat > "$stage/logging-v3/SKILL.md" <<'SKILL'
---
name: logging-v3
version: v3.1
description: Structured logging for agent runs.
dependencies: [auth-v2, metrics]
when_to_use: When a run needs an audit trail.
---
# Logging
SKILL
printf '#!/bin/bash\necho "logged"\n' > "$stage/logging-v3/execute.sh"

step "Validate every staged skill (logging-v3 has problems: exit 1 expected)" skillstage validate --all --run-tests
if skillstage validate --all --run-tests; then
  echo "expected a failure" >&2
  exit 1
fi

step "Fix what the hints say" "chmod +x …/execute.sh; version: 3.1.0; drop the missing dependency"
chmod +x "$stage/logging-v3/execute.sh"
sed -i 's/^version: v3.1$/version: 3.1.0/; s/^dependencies: .*/dependencies: [auth-v2]/' \
  "$stage/logging-v3/SKILL.md"
printf '#!/bin/bash\necho "No tests defined yet"\nexit 0\n' > "$stage/logging-v3/test.sh"
chmod +x "$stage/logging-v3/test.sh"

step "Validate again (a platform-extension key stays a warning)" skillstage validate --all --run-tests
skillstage validate --all --run-tests

step "The Agent Skills spec rules only, as JSON (for a script)" \
  "skillstage validate --spec-only --json $stage/auth-v2 | python3 -c …"
skillstage validate --spec-only --json "$stage/auth-v2" |
  python3 -c 'import json,sys; r=json.load(sys.stdin); print("ok:", r["ok"], "findings:", [f["id"] for s in r["skills"] for f in s["findings"]])'

# logging-v3 has been waiting in staging since two days ago: register it as first seen then
# (what `skillstage list` would have done, had it run 52 hours ago, before auth-v2 arrived).
mv "$stage/auth-v2" "$stage/.arrives-later"
python3 - <<'PY'
import datetime as dt
from skillstage import api
from skillstage.config import load_project
project = load_project()
api.list_skills(project, stage="staged", now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=52, minutes=18))
PY
mv "$stage/.arrives-later" "$stage/auth-v2"
git add -A && git commit -q -m "Skills in staging"

step "List staged skills (auth-v2 registered on first sight now; logging-v3 52 hours ago)" skillstage list --stage staged
skillstage list --stage staged

step "The 48-hour staging SLA (exit 1 on a breach, for cron and CI)" skillstage sla check
if skillstage sla check; then echo "expected an SLA breach" >&2; exit 1; fi

step "A dashboard query on the staged_skills table runs unchanged on the store" "sqlite3 .skillstage/state.db '…'"
python3 - <<'PY'
import sqlite3
db = sqlite3.connect(".skillstage/state.db")
rows = db.execute(
    "SELECT name, created_at, ROUND((julianday('now') - julianday(created_at)) * 24, 1) as age_hours"
    " FROM staged_skills WHERE promoted = 0 ORDER BY created_at ASC"
).fetchall()
for row in rows:
    print(" | ".join(str(value) for value in row))
PY

step "Promote auth-v2 to production with a git commit (gates, --yes skips the prompt)" \
  skillstage promote auth-v2 --yes --git-commit
skillstage promote auth-v2 --yes --git-commit
git log -1 --format=%B | sed 's/^/    /'

step "Enforce the SLA: promote the overdue logging-v3 if its gates pass" \
  skillstage sla enforce --auto-promote
skillstage sla enforce --auto-promote

step "A new version arrives in staging; promoting it over the live one needs --overwrite" \
  skillstage promote auth-v2 --yes --overwrite
cp -r .claude/skills/auth-v2 "$stage/auth-v2"
chmod -R u+w "$stage/auth-v2"
sed -i 's/^version: 2.0.0$/version: 2.1.0/' "$stage/auth-v2/SKILL.md"
if skillstage promote auth-v2 --yes; then echo "expected the conflict gate to stop it" >&2; exit 1; fi
skillstage promote auth-v2 --yes --overwrite

step "It misbehaves: roll back to the previous version from the archive" \
  skillstage rollback auth-v2 --reason pattern_fidelity_drop_below_85 --trigger-metric fidelity=0.83 --yes
skillstage rollback auth-v2 --reason pattern_fidelity_drop_below_85 --trigger-metric fidelity=0.83 --yes

step "History, newest first" skillstage history
skillstage history

step "The rollback_events table" "sqlite3 .skillstage/state.db 'SELECT … FROM rollback_events'"
python3 - <<'PY'
import sqlite3
db = sqlite3.connect(".skillstage/state.db")
for row in db.execute(
    "SELECT skill_id, from_state, to_state, trigger_reason, trigger_metric FROM rollback_events"
):
    print(" | ".join(str(value) for value in row))
PY

step "The key promotion metrics" skillstage stats
skillstage stats || true   # exit 1 flags a metric past its alert threshold

step "Metric gates and a human sign-off on every move" \
  "gates += metrics, approval; [approvals] approvers = [alice, Demo User]"
sed -i 's/"security"\]/"security", "metrics", "approval"]/; s/^approvers = \[\]/approvers = ["alice", "Demo User"]/' skillstage.toml
grep -n '^gates\|^approvers' skillstage.toml

proto=.claude/skills/prototype/spam-filter
mkdir -p "$proto/evals"
cat > "$proto/SKILL.md" <<'SKILL'
---
name: spam-filter
version: 1.0.0
description: Flag chat messages that are spam. Use when moderating a live chat.
author: Demo User
metadata:
  max_execution_time_ms: "2000"
---
# Spam filter

Check the blocklist, then the links, then decide `spam` or `allow`.
SKILL
cat > "$proto/execute.sh" <<'SH'
#!/bin/bash
# Reads {"text": …} on stdin; prints a decision and the breadcrumbs of how it got there.
text=$(cat)
if grep -qiE 'buy now|free money|click here' <<<"$text"; then decision=spam; else decision=allow; fi
printf '{"decision": "%s", "breadcrumbs": [{"event": "checked_blocklist"}, {"event": "checked_links"}, {"event": "decided", "decision": "%s"}]}\n' "$decision" "$decision"
SH
printf '#!/bin/bash\necho '"'"'{"text": "buy now"}'"'"' | ./execute.sh | grep -q spam && echo "tests passed"\n' > "$proto/test.sh"
chmod +x "$proto/execute.sh" "$proto/test.sh"
cat > "$proto/patterns.yaml" <<'YAML'
patterns:
  - id: blocklist
    description: checks the blocklist first
    keywords: [checked_blocklist]
    order: 1
  - id: links
    description: then inspects links
    regex: "checked_links"
    order: 2
  - id: decision
    description: ends with a decision
    regex: '"decided"'
    order: 3
YAML
python3 - "$proto/evals/evals.json" <<'PY'
import json, sys
cases = [
    ("buy now, limited offer", "spam", True), ("hello everyone", "allow", False),
    ("FREE MONEY here", "spam", True), ("great stream today", "allow", False),
    ("click here for prizes", "spam", False), ("what time is it?", "allow", False),
    ("buy now!!!", "spam", False), ("thanks for the help", "allow", False),
    ("free money, click here", "spam", True), ("see you tomorrow", "allow", False),
]
evals = [{"id": f"case-{i + 1}", "input": {"text": t}, "expected": d, "critical": c}
         for i, (t, d, c) in enumerate(cases)]
json.dump({"skill_name": "spam-filter", "negative_decisions": ["allow"], "evals": evals},
          open(sys.argv[1], "w"), indent=2)
PY
skillstage list --stage prototype

step "Run its benchmark cases (evals/evals.json) through execute.sh, scored by patterns.yaml" \
  skillstage eval spam-filter
skillstage eval spam-filter

step "Is it ready for staging? The metric gate passes; no sign-off yet (exit 1 expected)" \
  skillstage status spam-filter
if skillstage status spam-filter; then echo "expected the approval gate to block" >&2; exit 1; fi

step "The sign-off checklist, automated checks filled in from the store" \
  "skillstage signoff template spam-filter --to staged --by alice > signoff.yaml"
skillstage signoff template spam-filter --to staged --by alice --ticket APPROVAL_DEMO_001 > signoff.yaml
cat signoff.yaml | sed 's/^/    /'
sed -i 's/: NO  #/: YES  #/' signoff.yaml

step "The author cannot approve their own skill (four-eyes; exit 1 expected)" \
  skillstage approve spam-filter --to staged --by "'Demo User'" --ticket APPROVAL_DEMO_001 --decision approved --checklist signoff.yaml
if skillstage approve spam-filter --to staged --by "Demo User" --ticket APPROVAL_DEMO_001 \
  --decision approved --checklist signoff.yaml; then echo "expected four-eyes to refuse" >&2; exit 1; fi

step "alice approves; the promotion names her ticket" \
  "skillstage approve spam-filter --to staged --by alice …; skillstage promote spam-filter --approver alice --approval-ticket APPROVAL_DEMO_001"
skillstage approve spam-filter --to staged --by alice --ticket APPROVAL_DEMO_001 \
  --decision approved --checklist signoff.yaml --notes "benchmarks cover the edge cases"
skillstage promote spam-filter --yes --approver alice --approval-ticket APPROVAL_DEMO_001

step "Live traffic in staging: 120 executions recorded by the agent runtime, then ingested" \
  "python3 -c 'skillstage.record_execution(…)' × 120; skillstage metrics ingest"
python3 - <<'PY'
import random
import skillstage
random.seed(7)
for i in range(120):
    skillstage.record_execution(
        "spam-filter", version="1.0.0", subject=f"user-{i % 17}",
        pattern_fidelity=random.choice([1.0, 1.0, 1.0, 0.67]),
        outcome_quality=random.choice([1.0] * 9 + [0.0]),
        execution_time_ms=round(random.uniform(1.0, 3.0), 2),
    )
PY
skillstage metrics ingest
skillstage metrics lag

step "Staged against its prototype baseline (the benchmark runs)" \
  skillstage compare spam-filter prototype staged
skillstage compare spam-filter prototype staged

step "Ready for production? Every gate with its numbers (the sign-off is still missing)" \
  skillstage status spam-filter
skillstage status spam-filter || true

step "Sign off for production and promote" \
  "skillstage approve spam-filter --to production …; skillstage promote spam-filter"
skillstage signoff template spam-filter --to production --by alice --ticket APPROVAL_DEMO_002 |
  sed 's/: NO  #/: YES  #/' > signoff-production.yaml
skillstage approve spam-filter --to production --by alice --ticket APPROVAL_DEMO_002 \
  --decision approved --checklist signoff-production.yaml
skillstage promote spam-filter --yes --approver alice --approval-ticket APPROVAL_DEMO_002
skillstage history spam-filter

step "Anything in staging to demote?" skillstage demote-check
skillstage demote-check

step "The store and the disk agree" skillstage doctor
skillstage doctor

step "The store's schema is current" skillstage db upgrade
skillstage db upgrade

host="python3 $scripts/agent_host.py"

step "A new version, spam-filter 1.1.0, waits in staging; the agent host tries it there first" \
  "cp -r …/spam-filter $stage/; version: 1.1.0; python3 scripts/agent_host.py . --stage staged …"
cp -r .claude/skills/spam-filter "$stage/spam-filter"
chmod -R u+w "$stage/spam-filter"
sed -i 's/^version: 1.0.0$/version: 1.1.0/' "$stage/spam-filter/SKILL.md"
skillstage list --stage staged
$host . --skill spam-filter --stage staged --requests 120 --subjects 30 --seed 11
skillstage metrics ingest

step "Sign off 1.1.0 for production (its gates are the rollout's gates)" \
  "skillstage approve spam-filter --to production --by alice …"
skillstage signoff template spam-filter --to production --by alice --ticket APPROVAL_DEMO_003 |
  sed 's/: NO  #/: YES  #/' > signoff-rollout.yaml
skillstage approve spam-filter --to production --by alice --ticket APPROVAL_DEMO_003 \
  --decision approved --checklist signoff-rollout.yaml

step "Rehearse the rollback on a scratch copy: 1.1.0 promoted, then rolled back to 1.0.0; nothing live changes" \
  skillstage drill spam-filter
skillstage drill spam-filter

step "Go or no-go for 1.1.0? DELAY: no monitoring target is configured yet (exit 2 expected)" \
  skillstage go-no-go spam-filter
code=0; skillstage go-no-go spam-filter || code=$?
if [ "$code" != 2 ]; then echo "expected DELAY (exit 2), got exit $code" >&2; exit 1; fi

git add -A && git commit -q -m "spam-filter 1.0.0 in production, 1.1.0 in staging"
step "Roll it out gradually: 10% of production's traffic, then 50%, then all" \
  skillstage rollout start spam-filter --step-min-duration 0s --step-min-executions 50
skillstage rollout start spam-filter --step-min-duration 0s --step-min-executions 50

step "A developer laptop joins production: its .claude/skills follows what user-7 resolves to" \
  "skillstage sync --subject user-7 --into laptop/.claude/skills"
skillstage sync --subject user-7 --into laptop/.claude/skills
skillstage resolve spam-filter --subject user-7

step "The agent host serves 2,000 requests from 400 users; each user keeps their version" \
  "python3 scripts/agent_host.py . --skill spam-filter --requests 2000 --subjects 400"
$host . --skill spam-filter --requests 2000 --subjects 400 --seed 12

step "Per-version figures and the analysis of the step" skillstage rollout status spam-filter
skillstage rollout status spam-filter

step "The step succeeded: the next tick (cron, or the watcher) moves it to 50%" skillstage rollout tick
skillstage rollout tick

step "At 50% the candidate misbehaves (fidelity around 0.5)" \
  "python3 scripts/agent_host.py . --skill spam-filter --requests 600 --subjects 400 --candidate-fidelity 0.5"
$host . --skill spam-filter --requests 600 --subjects 400 --seed 13 --candidate-fidelity 0.5

step "The next tick aborts it: all traffic back on 1.0.0 at once (exit 1 expected)" skillstage rollout tick
if skillstage rollout tick; then echo "expected the rollout to abort" >&2; exit 1; fi
skillstage resolve spam-filter --subject user-7

step "The laptop follows: only the skill that changed is swapped back" \
  "skillstage sync --subject user-7 --into laptop/.claude/skills"
skillstage sync --subject user-7 --into laptop/.claude/skills
grep -m1 '^version' laptop/.claude/skills/spam-filter/SKILL.md

step "History and the registry file other tools read" \
  "skillstage history spam-filter; python3 -c '…' .skillstage/skills_registry.json"
skillstage history spam-filter --limit 6
python3 - <<'PY'
import json
registry = json.load(open(".skillstage/skills_registry.json"))
for name, entry in registry["skills"].items():
    print(f"{name}: {entry['promotion_state']} {entry['version']} at {entry['location']}, "
          f"last promotion {entry['last_promotion']}, rollout {entry['rollout']}")
PY

# -- The watcher: a live version that starts failing is rolled back by itself -------------------

step "A person looks at the failure report, fixes the regression in 1.2.0 and clears the hold" \
  "skillstage report spam-filter --failure; skillstage hold clear spam-filter --by alice …"
skillstage report spam-filter --failure | head -n 9
skillstage hold clear spam-filter --by alice --reason "1.2.0 fixes the regression"
sed -i 's/^version: 1.1.0$/version: 1.2.0/' "$stage/spam-filter/SKILL.md"
skillstage list --stage staged
$host . --skill spam-filter --stage staged --requests 120 --subjects 30 --seed 14
skillstage metrics ingest
skillstage signoff template spam-filter --to production --by alice --ticket APPROVAL_DEMO_004 |
  sed 's/: NO  #/: YES  #/' > signoff-watch.yaml
skillstage approve spam-filter --to production --by alice --ticket APPROVAL_DEMO_004 \
  --decision approved --checklist signoff-watch.yaml
git add -A && git commit -q -m "spam-filter 1.2.0 signed off"
skillstage promote spam-filter --to production --yes --overwrite --reason "fixes 1.1.0" | tail -n 3

step "Alerts go to the team's chat: a local HTTP receiver stands in for it" \
  "notifications.urls = [\"json://127.0.0.1:PORT/hook\"]"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 - "$port" > chat.log 2>/dev/null <<'PY' &
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Chat(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        print(f"[{body.get('type')}] {body.get('title')}: {body.get('message')}", flush=True)
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Chat)
server.timeout = 1
for _ in range(600):  # a bounded loop: ten minutes at most
    server.handle_request()
PY
chat=$!
sed -i "s|^urls = \[\].*|urls = [\"json://127.0.0.1:$port/hook\"]|" skillstage.toml
grep '^urls' skillstage.toml

step "The watcher runs in the background, a pass every second" "skillstage watch --interval 1s &"
skillstage watch --interval 1s > watch.log 2>&1 &
watcher=$!
trap 'kill $watcher $chat 2>/dev/null || true' EXIT
sleep 2
cat watch.log

step "Production's 1.2.0 starts failing: the host records executions with fidelity around 0.5" \
  "python3 scripts/agent_host.py . --skill spam-filter --requests 40 --fidelity 0.5 --failing-version 1.2.0"
started=$(date +%s.%N)
$host . --skill spam-filter --requests 40 --subjects 40 --seed 15 --fidelity 0.5 --failing-version 1.2.0
for _ in $(seq 100); do
  skillstage resolve spam-filter --subject user-7 --json | grep -q '"version": "1.0.0"' && break
  sleep 0.1
done
python3 -c "import sys; print(f'the loader serves 1.0.0 again, {float(sys.argv[2]) - float(sys.argv[1]):.1f} s after the first failing execution')" \
  "$started" "$(date +%s.%N)"
skillstage resolve spam-filter --subject user-7
cat watch.log

step "The rollback in history: its reason, its metric and its timeline" skillstage history spam-filter --limit 2
sleep 1
skillstage history spam-filter --limit 2

step "What reached the team's chat" "cat chat.log"
cat chat.log

step "The failure report, written by itself (Markdown and JSON under .skillstage/reports/)" \
  "skillstage report spam-filter --failure"
skillstage report spam-filter --failure

step "The skill is held: nothing goes back into production until a person clears it (exit 1 expected)" \
  "cp -r …/spam-filter $stage/ (1.2.1); skillstage promote spam-filter --to production --yes"
cp -r .claude/skills/spam-filter "$stage/spam-filter"
chmod -R u+w "$stage/spam-filter"
sed -i 's/^version: 1.0.0$/version: 1.2.1/' "$stage/spam-filter/SKILL.md"
skillstage list --stage staged > /dev/null
if skillstage promote spam-filter --to production --yes --overwrite; then
  echo "expected the hold to refuse it" >&2; exit 1
fi
skillstage hold list

step "Go or no-go for 1.2.1? NO-GO while the automated rollback is open (exit 1 expected)" \
  skillstage go-no-go spam-filter
code=0; skillstage go-no-go spam-filter || code=$?
if [ "$code" != 1 ]; then echo "expected NO-GO (exit 1), got exit $code" >&2; exit 1; fi

step "The kill switch: switch a skill off everywhere at once, nothing moves on disk" \
  "skillstage disable spam-filter --reason …; skillstage resolve …; skillstage enable spam-filter"
skillstage disable spam-filter --reason "demo: stop serving it now"
skillstage resolve spam-filter --subject user-7
skillstage enable spam-filter --reason "demo over"

step "SIGTERM: the watcher finishes its pass and exits 0" "kill -TERM \$watcher; wait \$watcher"
kill -TERM "$watcher"
wait "$watcher"
echo "watch exited $?"
kill "$chat" 2>/dev/null || true

# -- The dashboard: the same figures in a browser, and as one static file ----------------------

step "The skill's dashboard page as one static file (for a ticket or an e-mail)" \
  "skillstage report spam-filter --html workflow_dashboard_spam-filter.html"
skillstage report spam-filter --html workflow_dashboard_spam-filter.html

step "The web dashboard, served on loopback; screenshots of the overview and the skill's page" \
  "python3 -c 'uvicorn.run(create_app(project, auth=False))' & chromium --headless …"
if [[ -x /usr/bin/chromium ]]; then
  python3 - "$workspace/screenshots" <<'PY'
import socket
import sys
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from skillstage.config import load_project
from skillstage.dashboard.routes import router
from skillstage.server import create_app

project = load_project()
app = create_app(project, auth=False, actor="demo")
if not any(getattr(route, "path", None) == "/skills/{name}" for route in app.routes):
    app.include_router(router)  # (an app that serves the dashboard already needs no second copy)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
url = f"http://127.0.0.1:{listener.getsockname()[1]}"
server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
thread.start()
for _ in range(500):
    if server.started:
        break
    time.sleep(0.01)
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
problems = []
with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    for path, name in (("/", "overview.png"), ("/skills/spam-filter", "skill-spam-filter.png")):
        page.goto(url + path)
        page.screenshot(path=str(out / name), full_page=True)
        print(f"  {url}{path} -> {out / name}")
    browser.close()
server.should_exit = True
thread.join(10)
print("  console errors:", len(problems))
PY
else
  echo "  /usr/bin/chromium is not installed: no screenshots (apt-get install chromium)"
fi

printf '\nDemo workspace: %s\n' "$workspace"
