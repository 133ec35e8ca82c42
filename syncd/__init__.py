"""syncd: a self-hosted daemon that logs a team's email on CRM timelines in SQLite."""

__version__ = "0.1.0"
