"""Skillstage's ties to tools outside it: git commits, hooks and notifications."""
