"""Which company an email address belongs to: registrable domains and free-mail providers.

A contact's company is found by the registrable domain of its address
(``mail.example.co.uk`` -> ``example.co.uk``), computed from the public suffix list that
the ``publicsuffixlist`` wheel ships (no download at run time). Addresses at free-mail
providers (gmail.com, yahoo.*, ...) make no company: thousands of unrelated people share
them. Pure: no I/O after the suffix list is loaded once.
"""

from __future__ import annotations

from functools import cache, lru_cache

from publicsuffixlist import PublicSuffixList

from syncd.mail.addresses import domain_of, normalise_domain

# Exact registrable domains of consumer mail providers.
FREE_MAIL_DOMAINS: frozenset[str] = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "msn.com",
        "passport.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        "aim.com",
        "gmx.com",
        "gmx.net",
        "gmx.de",
        "web.de",
        "t-online.de",
        "freenet.de",
        "proton.me",
        "protonmail.com",
        "protonmail.ch",
        "pm.me",
        "tutanota.com",
        "tuta.io",
        "yandex.com",
        "yandex.ru",
        "ya.ru",
        "mail.ru",
        "inbox.ru",
        "list.ru",
        "bk.ru",
        "rambler.ru",
        "qq.com",
        "foxmail.com",
        "163.com",
        "126.com",
        "yeah.net",
        "sina.com",
        "sohu.com",
        "aliyun.com",
        "naver.com",
        "daum.net",
        "hanmail.net",
        "ymail.com",
        "rocketmail.com",
        "zoho.com",
        "zohomail.com",
        "fastmail.com",
        "fastmail.fm",
        "hey.com",
        "mail.com",
        "email.com",
        "usa.com",
        "laposte.net",
        "orange.fr",
        "wanadoo.fr",
        "free.fr",
        "sfr.fr",
        "libero.it",
        "virgilio.it",
        "tiscali.it",
        "seznam.cz",
        "wp.pl",
        "o2.pl",
        "interia.pl",
        "onet.pl",
        "btinternet.com",
        "sky.com",
        "comcast.net",
        "verizon.net",
        "att.net",
        "sbcglobal.net",
        "bigpond.com",
        "rediffmail.com",
        "hushmail.com",
        "posteo.de",
        "mailbox.org",
        "disroot.org",
        "riseup.net",
        "duck.com",
    }
)

# Providers that run the same free service under many country domains
# (yahoo.co.uk, hotmail.fr, gmx.at, yandex.kz, ...): any registrable domain whose first
# label is one of these counts as free-mail.
FREE_MAIL_BRANDS: frozenset[str] = frozenset(
    {"yahoo", "hotmail", "outlook", "live", "windowslive", "gmx", "yandex", "aol"}
)


@cache
def _suffix_list() -> PublicSuffixList:
    # Loaded on first use, not at import: building the list takes a few milliseconds.
    return PublicSuffixList()


@lru_cache(maxsize=65536)  # a team's mail comes from a few thousand domains, over and over
def registrable_domain(domain: str) -> str | None:
    """``mail.example.co.uk`` -> ``example.co.uk``; None for a bare public suffix or ''."""
    domain = normalise_domain(domain)
    if not domain or "." not in domain:
        return None
    return _suffix_list().privatesuffix(domain)


def is_free_mail(domain: str) -> bool:
    """True when ``domain`` (any subdomain level) belongs to a consumer mail provider."""
    registrable = registrable_domain(domain)
    if registrable is None:
        return False
    return registrable in FREE_MAIL_DOMAINS or registrable.split(".", 1)[0] in FREE_MAIL_BRANDS


def company_domain(address: str) -> str | None:
    """The domain that names the address's company, or None (free-mail, no domain)."""
    registrable = registrable_domain(domain_of(address))
    if registrable is None or is_free_mail(registrable):
        return None
    return registrable


def domain_matches(domain: str, rule: str) -> bool:
    """True when ``domain`` is ``rule`` or a subdomain of it (case-insensitive)."""
    domain = domain.lower().rstrip(".")
    rule = rule.lower().strip().lstrip("@").rstrip(".")
    return bool(rule) and (domain == rule or domain.endswith("." + rule))
