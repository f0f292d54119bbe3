"""Public suffixes: domains under which anyone may register a site (``com``, ``co.uk``, ``github.io``).

A cookie scoped to one reaches every site under it, and an origin wildcard over one admits all of
them: the configuration refuses both. The package carries no copy of the Public Suffix List
(publicsuffix.org) and depends on nothing that does, so :func:`is_public_suffix` knows:

* every single-label domain (a top-level one: the list's implicit ``*`` rule);
* :data:`KNOWN`, a short table of the best-known suffixes of more labels;
* the whole list, where the system has it (:data:`SYSTEM_LIST`: Debian's and Ubuntu's ``publicsuffix``
  package, Fedora's ``publicsuffix-list``), read once per process.

Without that file the check is partial (docs/security.md says so): a suffix missing from
:data:`KNOWN` passes.
"""

from __future__ import annotations

import functools
import logging
from encodings.idna import ToASCII
from typing import NamedTuple

from ..loading import read_regular_file

logger = logging.getLogger(__name__)

SYSTEM_LIST = "/usr/share/publicsuffix/public_suffix_list.dat"
"""Where Linux distributions install the Public Suffix List."""
MAX_LIST_BYTES = 4 * 1024 * 1024
"""A larger file is not the list (it is ~ 230 KB): not read."""

KNOWN = frozenset(
    """
    co.uk org.uk me.uk ltd.uk plc.uk net.uk ac.uk gov.uk sch.uk nhs.uk
    com.au net.au org.au edu.au gov.au id.au asn.au co.nz net.nz org.nz govt.nz ac.nz
    co.jp ne.jp or.jp ac.jp go.jp ed.jp gr.jp lg.jp co.kr or.kr ne.kr go.kr ac.kr
    com.cn net.cn org.cn gov.cn edu.cn com.hk org.hk net.hk com.tw org.tw net.tw com.sg org.sg net.sg
    com.my net.my org.my co.in net.in org.in firm.in gen.in ind.in co.id or.id web.id ac.id
    com.ph net.ph org.ph com.vn net.vn org.vn co.th in.th or.th com.pk com.bd com.np com.lk
    co.za org.za net.za web.za com.ng com.eg co.ke or.ke co.il org.il ac.il com.tr net.tr org.tr gen.tr
    com.sa com.ae co.ae com.qa
    com.br net.br org.br blog.br com.ar net.ar org.ar com.mx net.mx org.mx com.co net.co com.pe com.ve
    com.uy com.ec com.bo com.py com.gt
    com.ua net.ua org.ua in.ua kiev.ua com.ru net.ru org.ru msk.ru spb.ru com.pl net.pl org.pl
    com.es org.es nom.es com.pt com.gr com.cy co.at or.at co.hu co.it com.mt
    github.io githubusercontent.com gitlab.io herokuapp.com herokussl.com vercel.app now.sh netlify.app
    netlify.com pages.dev workers.dev web.app firebaseapp.com appspot.com blogspot.com
    azurewebsites.net azurestaticapps.net cloudapp.net cloudfront.net amazonaws.com s3.amazonaws.com
    elasticbeanstalk.com onrender.com fly.dev glitch.me ngrok.io ngrok.app ngrok-free.app
    repl.co replit.dev surge.sh readthedocs.io trycloudflare.com codesandbox.io stackblitz.io
    wordpress.com tumblr.com wixsite.com weebly.com squarespace.com myshopify.com
    """.split()  # noqa: SIM905 - a table reads better than a list of quoted strings
)
"""Common public suffixes of more than one label, from the Public Suffix List, and hosting domains.
A small table, not all of them: what is known without :data:`SYSTEM_LIST`."""


class SuffixRules(NamedTuple):
    """A Public Suffix List's rules, in ASCII (IDNA): ``exact`` (``co.uk``), ``wildcard`` (``ck`` of
    ``*.ck``: every domain one label under it) and ``exceptions`` (``www.ck`` of ``!www.ck``)."""

    exact: frozenset[str] = frozenset()
    wildcard: frozenset[str] = frozenset()
    exceptions: frozenset[str] = frozenset()

    def listed(self, domain: str) -> bool:
        """Whether ``domain`` (lower case, ASCII, no leading dot) is itself a suffix these rules name."""
        if domain in self.exceptions:
            return False
        return domain in self.exact or domain.partition(".")[2] in self.wildcard


def parse_rules(text: str) -> SuffixRules:
    """The rules of a list in the Public Suffix List's format (one rule a line, ``//`` comments); a rule
    whose labels IDNA cannot write in ASCII is left out (no configured domain can be it)."""
    exact: set[str] = set()
    wildcard: set[str] = set()
    exceptions: set[str] = set()
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("//"):
            continue
        rule = words[0].lower()
        into = exact
        if rule.startswith("!"):
            rule, into = rule[1:], exceptions
        elif rule.startswith("*."):
            rule, into = rule[2:], wildcard
        try:
            into.add(".".join(ToASCII(label).decode("ascii") for label in rule.split(".")))
        except UnicodeError:
            continue
    return SuffixRules(frozenset(exact), frozenset(wildcard), frozenset(exceptions))


@functools.cache
def system_rules() -> SuffixRules:
    """The rules of :data:`SYSTEM_LIST`; none when it is missing or unreadable (logged at DEBUG)."""
    try:
        text = read_regular_file(SYSTEM_LIST, MAX_LIST_BYTES).decode("utf-8", "replace")
    except OSError as exc:
        logger.debug("no public suffix list at %s (%s): only single labels and the known suffixes", SYSTEM_LIST, exc)
        return SuffixRules()
    return parse_rules(text)


def is_public_suffix(domain: str, rules: SuffixRules | None = None) -> bool:
    """Whether anyone may register a site under ``domain`` (lower case, ASCII, no leading dot): a single
    label, a :data:`KNOWN` suffix, or one the list names (``rules``; :func:`system_rules` by default)."""
    if "." not in domain or domain in KNOWN:
        return True
    return (system_rules() if rules is None else rules).listed(domain)


__all__ = ["KNOWN", "SYSTEM_LIST", "SuffixRules", "is_public_suffix", "parse_rules", "system_rules"]
