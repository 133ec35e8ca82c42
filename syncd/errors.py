"""The one exception root of syncd and its subclasses, grouped by how much they abort.

``MessageError`` costs one message (it goes to quarantine), ``InboxError`` one inbox
(retried with backoff), ``ConfigError`` the whole start. Errors carry their data as
attributes and format it in ``__str__``, so callers never build messages by hand and
secrets never enter them.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Root of every error syncd raises on purpose."""


class MessageError(SyncdError):
    """One message cannot be logged; it is quarantined with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class InboxError(SyncdError):
    """One inbox cannot be synced now; the daemon retries it with backoff."""

    def __init__(self, inbox: str, reason: str, *, auth: bool = False) -> None:
        super().__init__(inbox, reason)
        self.inbox = inbox
        self.reason = reason
        self.auth = auth

    def __str__(self) -> str:
        return f"inbox {self.inbox}: {self.reason}"


class StoreError(SyncdError):
    """The store cannot be opened or written now (locked, disk full); worth a retry."""


class StoreDenied(StoreError):
    """The store or its directory may not be opened or written by this user: waiting
    will not mend it (exit 77)."""


class StoreDamaged(StoreError):
    """The store's file is damaged, or was written by a newer syncd: no retry mends it,
    a backup does (exit 65). ``problems`` are what SQLite's checks found, if any."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []

    @classmethod
    def found(cls, path: str, problems: list[str]) -> StoreDamaged:
        """Damage that a check of the file at ``path`` found."""
        first = problems[0] if problems else "unreadable"
        more = f", and {len(problems) - 1} more" if len(problems) > 1 else ""
        return cls(
            f"the store {path} is damaged ({first}{more}); restore it from a backup "
            "(`syncd check-store` runs the full check)",
            problems,
        )


class ConfigProblem:
    """One problem in a configuration file, with where it is."""

    __slots__ = ("col", "file", "line", "message", "path")

    def __init__(self, file: str, line: int, col: int, path: str, message: str) -> None:
        self.file, self.line, self.col, self.path, self.message = file, line, col, path, message

    def __str__(self) -> str:
        if self.line == 0:  # the file as a whole (unreadable)
            return f"{self.file}: {self.message}"
        where = self.path or "(top)"
        return f"{self.file}:{self.line}:{self.col}: {where}: {self.message}"

    def __repr__(self) -> str:
        return f"ConfigProblem({self!s})"


class ConfigError(SyncdError):
    """The configuration is unusable: syncd refuses to start (exit 78)."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__(problems)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
