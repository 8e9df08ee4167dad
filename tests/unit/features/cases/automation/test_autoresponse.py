"""Pure auto-response decisions: never-respond signals, rule matching, the template sandbox."""

from __future__ import annotations

import pytest

from mailcase.features.cases.automation.autoresponse import (
    TEMPLATE_VARIABLES,
    Rule,
    TemplateError,
    check_templates,
    first_match,
    is_daemon_address,
    is_own_address,
    render,
    suppression_reason,
)
from mailcase.mime import parse_message

OWN = frozenset({"support@example.test", "sales@example.test"})
DOMAINS = ("mailcase.example.test",)


def _email(extra: str = "", sender: str = "ada@client.test") -> bytes:
    return (
        f"From: Ada <{sender}>\r\nTo: support@example.test\r\nSubject: Help\r\n"
        f"Message-ID: <m1@client.test>\r\n{extra}\r\nPrinter on fire\r\n"
    ).encode()


def _reason(extra: str = "", *, sender: str = "ada@client.test", mail_from: str = "") -> str | None:
    email = parse_message(_email(extra, sender))
    return suppression_reason(email, mail_from or sender, OWN, DOMAINS)


def test_person_gets_a_response() -> None:
    assert _reason() is None
    assert _reason("Auto-Submitted: no\r\n") is None
    assert _reason("Precedence: first-class\r\n") is None


@pytest.mark.parametrize(
    ("header", "word"),
    [
        ("Auto-Submitted: auto-replied\r\n", "auto-submitted"),
        ("Auto-Submitted: auto-generated\r\n", "auto-submitted"),
        ("Auto-Submitted: auto-notified; owner-email=x@y\r\n", "auto-submitted"),
        ("Precedence: bulk\r\n", "precedence"),
        ("Precedence: junk\r\n", "precedence"),
        ("Precedence: list\r\n", "precedence"),
        ("List-Id: <users.lists.example.test>\r\n", "list-id"),
        ("X-Auto-Response-Suppress: All\r\n", "x-auto-response-suppress"),
    ],
)
def test_automatic_mail_never_answered(header: str, word: str) -> None:
    reason = _reason(header)
    assert reason is not None and word in reason


def test_empty_return_path_never_answered() -> None:
    email = parse_message(_email())
    assert suppression_reason(email, "", OWN, DOMAINS) == "empty return path"
    assert suppression_reason(email, "<>", OWN, DOMAINS) == "empty return path"


@pytest.mark.parametrize(
    "sender",
    [
        "MAILER-DAEMON@client.test",
        "postmaster@client.test",
        "noreply@client.test",
        "no-reply@client.test",
        "do-not-reply@client.test",
        "donotreply@client.test",
        "owner-users@lists.client.test",
        "users-request@lists.client.test",
        "billing-noreply@client.test",
    ],
)
def test_daemon_and_noreply_senders_never_answered(sender: str) -> None:
    assert is_daemon_address(sender)
    assert _reason(sender=sender) is not None
    # Also when only the envelope sender is one (From looks like a person).
    assert _reason(mail_from=sender) is not None


@pytest.mark.parametrize("sender", ["ada@client.test", "reply@client.test", "norman@x.test"])
def test_people_are_not_daemons(sender: str) -> None:
    assert not is_daemon_address(sender)


@pytest.mark.parametrize(
    "sender",
    [
        "support@example.test",
        "SALES@Example.TEST",
        "x@mailcase.example.test",
        "y@a.mailcase.example.test",
    ],
)
def test_own_addresses_never_answered(sender: str) -> None:
    assert is_own_address(sender, OWN, DOMAINS)
    reason = _reason(sender=sender)
    assert reason is not None and "own" in reason


def test_not_own_lookalike() -> None:
    assert not is_own_address("x@evilmailcase.example.test", OWN, DOMAINS)
    assert not is_own_address("support@example.test.evil", OWN, DOMAINS)


def _rule(rid: int, position: int, **kw: object) -> Rule:
    fields: dict[str, object] = {
        "id": rid,
        "name": f"r{rid}",
        "position": position,
        "enabled": True,
        "routing_address": None,
        "sender_domain": None,
        "subject_contains": None,
        "from_name": "",
        "subject_template": "s",
        "text_template": "t",
        "html_template": None,
    }
    fields.update(kw)
    return Rule(**fields)  # type: ignore[arg-type]


def test_first_match_wins_in_order() -> None:
    rules = [
        _rule(1, 30),
        _rule(2, 10, subject_contains="URGENT"),
        _rule(3, 20, sender_domain="vip.test"),
    ]
    assert first_match(rules, "support@example.test", "a@vip.test", "urgent: x")
    assert first_match(rules, "s@e.test", "a@vip.test", "is it urgent?").id == 2  # type: ignore[union-attr]
    assert first_match(rules, "s@e.test", "a@sub.vip.test", "hello").id == 3  # type: ignore[union-attr]
    assert first_match(rules, "s@e.test", "a@notvip.test", "hello").id == 1  # type: ignore[union-attr]
    # Same position: lower id first.
    same = [_rule(9, 5), _rule(4, 5)]
    assert first_match(same, "s@e.test", "a@b.test", "x").id == 4  # type: ignore[union-attr]


def test_all_criteria_must_hold() -> None:
    rule = _rule(
        1,
        1,
        routing_address="support@example.test",
        sender_domain="client.test",
        subject_contains="invoice",
    )
    assert rule.matches("Support@Example.test", "a@client.test", "Your INVOICE 3")
    assert not rule.matches("sales@example.test", "a@client.test", "Your invoice")
    assert not rule.matches("support@example.test", "a@other.test", "Your invoice")
    assert not rule.matches("support@example.test", "a@client.test", "Your bill")
    assert not rule.matches("support@example.test", "a@evilclient.test", "invoice")


def test_disabled_rule_never_matches() -> None:
    assert first_match([_rule(1, 1, enabled=False)], "s@e.test", "a@b.test", "x") is None
    assert first_match([], "s@e.test", "a@b.test", "x") is None


def test_render_variables_and_html_autoescape() -> None:
    variables = dict(TEMPLATE_VARIABLES, subject="<script>alert(1)</script>", contact_name="A & B")
    out = render(
        "Case {{ case_number }}: {{ subject }}",
        "Hello {{ contact_name }}, case {{ case_number }} {{ thread_token }}",
        "<p>Hello {{ contact_name }}: {{ subject }}</p>",
        variables,
    )
    assert out.subject == "Case 00001027: <script>alert(1)</script>"  # text: no escaping
    assert out.text == f"Hello A & B, case 00001027 {TEMPLATE_VARIABLES['thread_token']}"
    assert out.html == "<p>Hello A &amp; B: &lt;script&gt;alert(1)&lt;/script&gt;</p>"


def test_subject_is_one_line() -> None:
    out = render("a\n{{ subject }}\r\nb", "t", None, dict(TEMPLATE_VARIABLES, subject="x\ny"))
    assert out.subject == "a x y b"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ subject.__class__.__base__ }}",
        "{{ case_number.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ ''.format.__self__ }}",
        "{% set x = [] %}{{ x.append(1) }}",
        "{{ 'x' * 1000000000 }}",
        "{{ 2 ** 100000 }}",
        "{% for i in range(10**9) %}{% endfor %}",
    ],
)
def test_sandbox_refuses_escapes(template: str) -> None:
    with pytest.raises(TemplateError):
        check_templates("s", template, None)
    with pytest.raises(TemplateError):
        check_templates(template, "body", None)
    with pytest.raises(TemplateError):
        check_templates("s", "body", template)


@pytest.mark.parametrize("template", ["{{ unknown_variable }}", "{% if %}", "{{ 1 / 0 }}", "   "])
def test_broken_templates_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        check_templates("s", template, None)


def test_good_template_checks() -> None:
    out = check_templates("Re: {{ subject }}", "We opened case {{ case_number }}.", None)
    assert out.text == "We opened case 00001027."
