"""Pure decisions of auto-responses: who never gets one, which rule applies, the template.

Nothing here touches storage; `automation.py` feeds it rows and writes what it decides.

- `suppression_reason`: RFC 3834 §2 and common practice say never to answer automatic mail
  (Auto-Submitted other than "no", Precedence bulk/junk/list, List-Id, reports), mail with an
  empty return path, daemon and no-reply senders, or our own addresses: any of those can
  start or feed a mail loop.
- `first_match`: ordered rule entries, first match wins (as Salesforce's rule entries).
- `render`: Jinja2 in `ImmutableSandboxedEnvironment` (attribute escapes such as
  ``{{ ''.__class__ }}`` raise `SecurityError`, nothing can be mutated), HTML autoescaped,
  string repetition bounded, output capped. Templates are checked when a rule is saved.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailcase.mime import InboundEmail

__all__ = [
    "MAX_RENDERED",
    "Rendered",
    "Rule",
    "TemplateError",
    "TEMPLATE_VARIABLES",
    "check_templates",
    "first_match",
    "is_daemon_address",
    "is_own_address",
    "render",
    "suppression_reason",
]

#: Longest rendered template output kept (characters); more is cut.
MAX_RENDERED = 100_000
#: Longest string or list a template may build by repetition ("x" * n).
_MAX_REPEAT = 100_000
#: Variables a template can use; `check_templates` renders with these sample values.
TEMPLATE_VARIABLES: Mapping[str, str] = {
    "case_number": "00001027",
    "subject": "Printer on fire",
    "contact_name": "Ada Lovelace",
    "contact_email": "ada@example.test",
    "thread_token": "thread::b3.k5yq3a2cxwzbjr7d4j6ezp2a::",
    "routing_address": "support@example.test",
    "routing_name": "Support",
}

# RFC 3834 §2: never respond to these local parts ("owner-*", "*-request", MAILER-DAEMON),
# and common no-reply spellings.
_DAEMON_LOCAL = re.compile(
    r"^(mailer-daemon|postmaster|no[-_.]?reply|do[-_.]?not[-_.]?reply|bounces?|"
    r"listserv|majordomo|owner-.*|.*-request|.*[-_.]no[-_.]?reply)(\+.*)?$",
    re.IGNORECASE,
)


class TemplateError(ValueError):
    """A template that does not compile, renders an unknown variable or escapes the sandbox."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One auto-response rule entry (a row of `auto_response_rules`)."""

    id: int
    name: str
    position: int
    enabled: bool
    routing_address: str | None
    sender_domain: str | None
    subject_contains: str | None
    from_name: str
    subject_template: str
    text_template: str
    html_template: str | None

    def matches(self, routing_address: str, sender: str, subject: str) -> bool:
        """True when every criterion that is set holds (empty criteria match anything)."""
        if not self.enabled:
            return False
        if self.routing_address and self.routing_address.casefold() != routing_address.casefold():
            return False
        if self.sender_domain:
            want = self.sender_domain.casefold().lstrip("@").rstrip(".")
            domain = sender.rpartition("@")[2].casefold().rstrip(".")
            if not (domain == want or domain.endswith("." + want)):
                return False
        if self.subject_contains and self.subject_contains.casefold() not in subject.casefold():
            return False
        return True


def first_match(
    rules: Iterable[Rule], routing_address: str, sender: str, subject: str
) -> Rule | None:
    """The first rule by (position, id) whose criteria match, or None."""
    for rule in sorted(rules, key=lambda r: (r.position, r.id)):
        if rule.matches(routing_address, sender, subject):
            return rule
    return None


def is_daemon_address(address: str) -> bool:
    """mailer-daemon, postmaster, noreply, list -request/owner- addresses (RFC 3834 §2)."""
    local = address.rpartition("@")[0] if "@" in address else address
    return bool(local) and _DAEMON_LOCAL.match(local.strip('"')) is not None


def is_own_address(address: str, own_addresses: frozenset[str], own_domains: Iterable[str]) -> bool:
    """`address` is one we receive for, or at one of our own host names (or below them)."""
    addr = address.strip().strip("<>").casefold()
    if not addr:
        return False
    if addr in own_addresses:
        return True
    domain = addr.rpartition("@")[2].rstrip(".")
    for own in own_domains:
        own = own.casefold().rstrip(".")
        if own and (domain == own or domain.endswith("." + own)):
            return True
    return False


def suppression_reason(
    email: InboundEmail,
    mail_from: str,
    own_addresses: frozenset[str],
    own_domains: Iterable[str],
) -> str | None:
    """Why this message must get no automatic answer, or None when one may be sent."""
    if not mail_from.strip().strip("<>"):
        return "empty return path"
    if email.auto_submitted:
        signal = email.auto_submitted.signals[0]
        return f"automatic message ({signal.reason.value}: {signal.evidence})"[:300]
    for label, addr in (("return path", mail_from), ("From", email.from_address)):
        if addr and is_daemon_address(addr):
            return f"{label} <{addr}> is a daemon or no-reply address"
    own_domains = tuple(own_domains)
    for label, addr in (("return path", mail_from), ("From", email.from_address)):
        if addr and is_own_address(addr, own_addresses, own_domains):
            return f"{label} <{addr}> is one of our own addresses"
    return None


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered auto-response: subject (one line), text and optional HTML."""

    subject: str
    text: str
    html: str | None


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with bounded repetition ("x" * 10**9 would exhaust memory)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int) and abs(right) > 64:
                raise SecurityError("exponent too large in a template")
            return left**right
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(n, int):
                if len(seq) * n > _MAX_REPEAT:
                    raise SecurityError("repetition too large in a template")
        return super().call_binop(context, operator, left, right)


_TEXT_ENV = _Sandbox(autoescape=False, undefined=jinja2.StrictUndefined)
_HTML_ENV = _Sandbox(autoescape=True, undefined=jinja2.StrictUndefined)


def _render_one(env: _Sandbox, source: str, variables: Mapping[str, str]) -> str:
    try:
        out = env.from_string(source).render(**variables)
    except SecurityError as exc:
        raise TemplateError(f"template refused by the sandbox: {exc}") from exc
    except jinja2.TemplateError as exc:
        raise TemplateError(f"template error: {exc}") from exc
    except (ArithmeticError, ValueError, TypeError, LookupError, RecursionError) as exc:
        raise TemplateError(f"template failed: {type(exc).__name__}: {exc}") from exc
    return out[:MAX_RENDERED]


def render(
    subject_template: str,
    text_template: str,
    html_template: str | None,
    variables: Mapping[str, str],
) -> Rendered:
    """Render the three templates in the sandbox; raises `TemplateError`."""
    subject = " ".join(_render_one(_TEXT_ENV, subject_template, variables).split())
    text = _render_one(_TEXT_ENV, text_template, variables)
    html = _render_one(_HTML_ENV, html_template, variables) if html_template else None
    return Rendered(subject=subject, text=text, html=html)


def check_templates(
    subject_template: str, text_template: str, html_template: str | None
) -> Rendered:
    """Render with sample values so that a broken or hostile template is refused when saved."""
    if not text_template.strip():
        raise TemplateError("the body template is empty")
    return render(subject_template, text_template, html_template, TEMPLATE_VARIABLES)
