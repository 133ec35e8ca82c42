"""The search syntax as a table: what a user types, and the FTS5 expression it becomes
or the one line that says why it cannot be run."""

from __future__ import annotations

import sqlite3

import pytest

from syncd.store.searchquery import QueryError, fts_query

TRANSLATED = [
    ("zebra plan", '"zebra" AND "plan"'),
    ("zebra AND plan", '"zebra" AND "plan"'),
    ("zebra OR okapi", '"zebra" OR "okapi"'),
    ("zebra NOT plan", '"zebra" NOT "plan"'),
    ("zebra and plan", '"zebra" AND "and" AND "plan"'),  # lower case: words
    ('"price list"', '"price list"'),
    ('"price list"* OR pric*', '"price list"* OR "pric"*'),
    ("(zebra OR okapi) plan", '( "zebra" OR "okapi" ) AND "plan"'),
    ("plan (zebra OR okapi)", '"plan" AND ( "zebra" OR "okapi" )'),
    ("zebra NOT plan okapi", '"zebra" NOT "plan" AND "okapi"'),
    ("subject:zebra", 'subject : "zebra"'),
    ('Subject:"the plan"', 'subject : "the plan"'),
    ("attachments:pdf", 'attachment_names : "pdf"'),
    ("attachments:(quote OR invoice)", 'attachment_names : ( "quote" OR "invoice" )'),
    ("body:zeb* addresses:acme", 'body : "zeb"* AND addresses : "acme"'),
    ("carol@acme.com", '"carol@acme.com"'),
    ("re:pricing", '"re:pricing"'),  # no such column: text
    ("o'brien x-ray", '"o\'brien" AND "x-ray"'),
    ("zebra & plan", '"zebra" AND "plan"'),  # nothing searchable in "&"
    ("NEAR(a b)", '"NEAR" AND ( "a" AND "b" )'),
]


@pytest.mark.parametrize(("typed", "expected"), TRANSLATED)
def test_translation(typed: str, expected: str) -> None:
    assert fts_query(typed) == expected


REFUSED = [
    ('"zebra plan', 'unbalanced quote: a "phrase" needs its closing "'),
    ("AND", "AND needs a search term on each side, as in: a AND b"),
    ("zebra AND", "AND needs a search term on each side, as in: a AND b"),
    ("NOT plan", "NOT needs a search term on each side, as in: a NOT b"),
    ("zebra OR OR plan", "OR needs a search term on each side, as in: a OR b"),
    ("(OR plan)", "OR needs a search term on each side, as in: a OR b"),
    ("(zebra", "unbalanced parentheses: a ( without its )"),
    ("zebra)", "unbalanced parentheses: a ) without its ("),
    ("zebra ()", "empty parentheses: put search terms between ( and )"),
    ("subject:", 'subject: needs a word, a "phrase" or a (group) after it'),
    ("attachments: OR x", 'attachments: needs a word, a "phrase" or a (group) after it'),
    ("subject:&", 'subject: needs a word, a "phrase" or a (group) after it'),
    ("@ *", "nothing to search for: the query has no words"),
    ("", "nothing to search for: the query has no words"),
]


@pytest.mark.parametrize(("typed", "message"), REFUSED)
def test_refused(typed: str, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        fts_query(typed)
    assert str(caught.value) == message


@pytest.mark.parametrize("typed", [t for t, _ in TRANSLATED])
def test_fts5_accepts_every_translation(typed: str) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(subject, body, addresses, attachment_names)")
    conn.execute("SELECT * FROM t WHERE t MATCH ?", (fts_query(typed),)).fetchall()
