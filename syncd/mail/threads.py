"""Thread keys: which conversation an email belongs to, from its own headers and people.

The key is chosen so that every message of a conversation computes the same value from
itself alone (the pipeline logs mail in any order, from several sources):

1. ``gm:<X-GM-THRID>`` when Gmail told us its thread id: Gmail already grouped the thread,
   including replies whose clients dropped References. The caller decides whose word that
   is: Gmail's IMAP FETCH attribute, or the header of a Google Takeout mbox, never a header
   in mail anyone could have sent.
2. Else the first Message-ID in References: by RFC 5322 section 3.6.4 that is the root of
   the conversation, and every well-behaved reply carries it (clients that trim a long
   References list keep the first entry).
3. Else In-Reply-To: a reply from a client that sends no References; it names the parent,
   which is the root for the common two-message exchange.
4. Else the normalised subject within the same participants (``subject_key``): mail with
   no reply headers at all, such as a root, or a reply from a client that drops them,
   whose subject reads the same once "Re:", "Fwd:", "AW:" and list tags are taken off,
   between the same people. The participants are part of the key so that "Invoice" or
   "Re: Hello" never joins conversations of different people; the caller passes the
   participants it means (the store: the people outside the team on From, To and Cc).
5. Else the message's own id (or its digest key when it has none).

A reply found by step 2 or 3 names a Message-ID while its root, keyed by step 1 or 4,
does not carry its own id as key: the store joins the two (``syncd.store.threads``) by
giving a reply the stored thread key of the message it names, and the replies logged
before their root the root's key once it comes.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence

from syncd.mail.addresses import normalise

GMAIL_PREFIX = "gm:"
SUBJECT_PREFIX = "subject:"

# Reply and forward prefixes as mail clients write them in English, German, the Nordic
# languages, Dutch, French, Italian, Spanish, Portuguese, Polish, Czech, Turkish, Chinese
# and Japanese ("Re[2]:", "RE :", "Re: Re:" included), and list or gateway tags in
# brackets ("[EXTERNAL]", "[sales]"), which one side of a conversation often lacks.
_PREFIXES = re.compile(
    r"""(?:
        (?:re|fwd?|aw|wg|sv|vs|vb|antw|doorst|rif|r|i|tr|ref|réf|rép|res|enc|odp|pd|fs|
           ynt|ilt|回复|回覆|答复|转发|轉寄|返信|転送)
        \s*(?:\[\d+\]|\(\d+\))?\s*:
      | \[[^\]]{0,40}\]
    )\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_ALL_PREFIXES = re.compile(f"(?:{_PREFIXES.pattern})+", re.IGNORECASE | re.VERBOSE)
_SPACE = re.compile(r"\s+")
_FWD_SUFFIX = re.compile(r"\s*\((?:fwd|fw)\)$", re.IGNORECASE)


def normalise_subject(subject: str) -> str:
    """The subject as a conversation's messages share it: reply and forward prefixes and
    bracketed tags taken off (however many), runs of white space as one space, case
    folded; '' when nothing is left."""
    text = subject or ""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)  # full-width colons and letters
    text = _SPACE.sub(" ", text).strip()
    prefixes = _ALL_PREFIXES.match(text)
    if prefixes:
        text = text[prefixes.end() :]
    return _FWD_SUFFIX.sub("", text).strip().casefold()


def subject_key(subject: str, participants: Iterable[str]) -> str | None:
    """``subject:<digest>`` of the normalised subject and the set of participants (lower
    case); None when the subject normalises to nothing or there is nobody. A digest, so
    the key holds neither the subject nor an address (an erase need not look in it)."""
    normalised = normalise_subject(subject)
    people = sorted({normalise(p) for p in participants if p and p.strip()})
    if not normalised or not people:
        return None
    text = "\x00".join([normalised, *people])
    return SUBJECT_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def thread_key(
    message_id: str,
    in_reply_to: str | None,
    references: Sequence[str],
    gm_thrid: str | None,
    subject: str = "",
    participants: Iterable[str] = (),
) -> str:
    """The thread key of one message; ``message_id`` is its id, or its digest key if none.

    Ids are expected already normalised by ``syncd.mail.parse`` (no angle brackets, domain
    lower-cased). Without ``participants`` there is no subject fallback (step 4).
    """
    if gm_thrid and gm_thrid.strip():
        return GMAIL_PREFIX + gm_thrid.strip()
    for ref in references:
        if ref:
            return ref
    if in_reply_to:
        return in_reply_to
    return subject_key(subject, participants) or message_id


def names_a_message(key: str, own_key: str) -> bool:
    """Whether ``key`` (from ``thread_key``) is another message's id, i.e. came from
    References or In-Reply-To, so the store may know that message's thread."""
    return key != own_key and not key.startswith((GMAIL_PREFIX, SUBJECT_PREFIX))
