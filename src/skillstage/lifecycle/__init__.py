"""The promoter: stages and transitions, gates, promote and rollback behind a lock and a journal."""
