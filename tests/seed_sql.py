"""Seed 000's dashboard queries ("Monitoring" → "Dashboard Queries"), copied verbatim: the tests run
them unchanged against the SQLite store."""

SKILLS_IN_STAGING = """
SELECT
  name,
  created_at,
  ROUND((julianday('now') - julianday(created_at)) * 24, 1) as age_hours
FROM staged_skills
WHERE promoted = 0
ORDER BY created_at ASC;
"""

PROMOTION_SUCCESS_RATE = """
SELECT
  COUNT(*) as total_promotions,
  SUM(CASE WHEN success = 1 THEN 1 ELSE 0 END) as successful,
  ROUND(100.0 * SUM(success) / COUNT(*), 2) as success_rate
FROM skill_promotions
WHERE promoted_at > datetime('now', '-30 days');
"""

SLA_BREACHES = """
SELECT
  name,
  created_at,
  ROUND((julianday('now') - julianday(created_at)) * 24, 1) as age_hours,
  ROUND((julianday('now') - julianday(created_at)) * 24 - 48, 1) as breach_hours
FROM staged_skills
WHERE promoted = 0
  AND created_at < datetime('now', '-48 hours')
ORDER BY created_at ASC;
"""

PROMOTION_HISTORY = """
SELECT
  skill_name,
  promoted_at,
  promoted_by,
  production_path
FROM skill_promotions
ORDER BY promoted_at DESC
LIMIT 10;
"""
