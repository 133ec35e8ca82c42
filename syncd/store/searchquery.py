"""The search query syntax: what a user types to ``syncd search``, checked and turned into
an FTS5 MATCH expression for ``emails_fts``.

The syntax is FTS5's own, minus the parts that surprise: words, ``"phrases"``,
``prefix*``, ``AND``/``OR``/``NOT`` (upper case; lower case they are words),
parentheses, and column filters (``subject:``, ``body:``, ``addresses:``,
``attachments:``). Every word reaches FTS5 quoted, so characters FTS5 would reject
(``carol@acme.com``, ``re:pricing``, ``o'brien``) are just text that its tokenizer
splits. A query FTS5 would refuse, or one with nothing to search for, raises
``QueryError`` with one line saying what is wrong, instead of matching nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The filter names a user types, and the index column each one reads.
COLUMNS = {
    "subject": "subject",
    "body": "body",
    "addresses": "addresses",
    "attachments": "attachment_names",
}
OPERATORS = ("AND", "OR", "NOT")

# What FTS5's unicode61 tokenizer keeps: letters and digits. A term without any is a
# phrase of no tokens, which FTS5 treats inconsistently (ignored beside a word, matching
# nothing after AND), so it is left out.
_SEARCHABLE = re.compile(r"[^\W_]")
_WORD = re.compile(r'[^\s"()]+')
_FILTER = re.compile(r"([A-Za-z]+):(.*)", re.DOTALL)


class QueryError(ValueError):
    """A search query that cannot be run; the message is one line for the user."""


@dataclass(frozen=True)
class _Token:
    kind: str  # "term", "op", "(", ")", "filter"
    text: str  # the FTS5 text of it
    name: str = ""  # a filter's name as the user types it


def _tokens(text: str) -> list[_Token]:
    """The query split into terms, operators, parentheses and column filters."""
    found: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "()":
            found.append(_Token(char, char))
            i += 1
        elif char == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise QueryError('unbalanced quote: a "phrase" needs its closing "')
            phrase, i = text[i + 1 : end], end + 1
            prefix = text.startswith("*", i)
            i += prefix
            if _SEARCHABLE.search(phrase):
                found.append(_Token("term", _quoted(phrase, prefix)))
        else:
            match = _WORD.match(text, i)
            assert match is not None  # the branches above took every other character
            i = match.end()
            found.extend(_word(match.group()))
    return found


def _word(word: str) -> list[_Token]:
    if word in OPERATORS:
        return [_Token("op", word)]
    column = _FILTER.fullmatch(word)
    if column and column.group(1).lower() in COLUMNS:
        name, rest = column.group(1).lower(), column.group(2)
        tokens = [_Token("filter", f"{COLUMNS[name]} :", name)]
        if not rest:
            return tokens  # a phrase or a group follows
        if not _SEARCHABLE.search(rest):
            raise QueryError(f'{name}: needs a word, a "phrase" or a (group) after it')
        return [*tokens, _term(rest)]
    # "re:pricing" and other colons that name no column are plain text.
    return [_term(word)] if _SEARCHABLE.search(word) else []


def _term(word: str) -> _Token:
    prefix = word.endswith("*")
    return _Token("term", _quoted(word.rstrip("*"), prefix))


def _quoted(text: str, prefix: bool) -> str:
    return '"' + text.replace('"', '""') + '"' + ("*" if prefix else "")


def fts_query(text: str) -> str:
    """``text`` in the documented syntax as an FTS5 MATCH expression; ``QueryError`` if
    it is malformed or holds nothing to search for."""
    tokens = _tokens(text)
    depth = 0
    previous = _Token("start", "")
    joined: list[str] = []
    for token in [*tokens, _Token("end", "")]:
        if previous.kind in ("term", ")") and token.kind in ("term", "(", "filter"):
            # FTS5 joins two phrases by a space but refuses one beside a group, and its
            # space binds tighter than NOT: an explicit AND keeps one documented rule.
            joined.append("AND")
        if previous.kind == "filter" and token.kind not in ("term", "("):
            raise QueryError(f'{previous.name}: needs a word, a "phrase" or a (group) after it')
        if token.kind == "op" and previous.kind not in ("term", ")"):
            raise _sides(token.text)
        if previous.kind == "op" and token.kind in (")", "end"):
            raise _sides(previous.text)
        if token.kind == "(":
            depth += 1
        elif token.kind == ")":
            if previous.kind == "(":
                raise QueryError("empty parentheses: put search terms between ( and )")
            if depth == 0:
                raise QueryError("unbalanced parentheses: a ) without its (")
            depth -= 1
        joined.append(token.text)
        previous = token
    if depth:
        raise QueryError("unbalanced parentheses: a ( without its )")
    if not any(t.kind == "term" for t in tokens):
        raise QueryError("nothing to search for: the query has no words")
    return " ".join(joined).strip()


def _sides(operator: str) -> QueryError:
    return QueryError(f"{operator} needs a search term on each side, as in: a {operator} b")
