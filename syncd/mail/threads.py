"""Thread keys: which conversation an email belongs to, from its own headers alone.

The key is chosen so that every message of a conversation computes the same value without
looking at any other message (the pipeline logs mail in any order, from several sources):

1. ``gm:<X-GM-THRID>`` when Gmail told us its thread id: Gmail already grouped the thread,
   including replies whose clients dropped References.
2. Else the first Message-ID in References: by RFC 5322 section 3.6.4 that is the root of
   the conversation, and every well-behaved reply carries it (clients that trim a long
   References list keep the first entry).
3. Else In-Reply-To: a reply from a client that sends no References; it names the parent,
   which is the root for the common two-message exchange.
4. Else the message's own id (or its digest key when it has none): it starts a thread, and
   because a root's thread key equals its own id, replies to it land on the same key.

The subject is deliberately not used: "Re: Hello" or "Invoice" would merge unrelated
conversations of different contacts. A conversation seen through Gmail IMAP and through
another source (BCC, import) can carry both a ``gm:`` key and a Message-ID key; the
exactly-once key is the Message-ID, so the first copy logged decides.
"""

from __future__ import annotations

from collections.abc import Sequence


def thread_key(
    message_id: str,
    in_reply_to: str | None,
    references: Sequence[str],
    gm_thrid: str | None,
    subject: str = "",
) -> str:
    """The thread key of one message; ``message_id`` is its id, or its digest key if none.

    ``subject`` is accepted so callers hand over everything a thread could be keyed on, and
    ignored on purpose (see the module docstring). Ids are expected already normalised by
    ``syncd.mail.parse`` (no angle brackets, domain lower-cased).
    """
    del subject
    if gm_thrid and gm_thrid.strip():
        return "gm:" + gm_thrid.strip()
    for ref in references:
        if ref:
            return ref
    if in_reply_to:
        return in_reply_to
    return message_id
