from mailcase.policy import Accept, AddressRule, Reject, decide_recipient

RULES = {
    "support@example.test": AddressRule("support@example.test"),
    "secure@example.test": AddressRule("secure@example.test", require_tls=True),
    "off@example.test": AddressRule("off@example.test", enabled=False),
}
DOMAINS = frozenset({"example.test"})


def decide(rcpt: str, tls: bool = False) -> Accept | Reject:
    return decide_recipient(rcpt, RULES, DOMAINS, tls_active=tls)


def test_configured_address_accepted_case_insensitively() -> None:
    v = decide("Support@EXAMPLE.test")
    assert isinstance(v, Accept) and v.rule.address == "support@example.test"


def test_unknown_mailbox_at_our_domain_is_550_5_1_1() -> None:
    v = decide("nobody@example.test")
    assert isinstance(v, Reject) and (v.reply.code, v.reply.enhanced) == (550, "5.1.1")


def test_foreign_domain_is_a_relay_attempt() -> None:
    v = decide("victim@elsewhere.test")
    assert isinstance(v, Reject) and (v.reply.code, v.reply.enhanced) == (550, "5.7.1")


def test_tls_required_address_needs_tls() -> None:
    v = decide("secure@example.test", tls=False)
    assert isinstance(v, Reject)
    assert str(v.reply) == "530 5.7.0 Must issue a STARTTLS command first"
    assert isinstance(decide("secure@example.test", tls=True), Accept)


def test_disabled_address_refused() -> None:
    v = decide("off@example.test", tls=True)
    assert isinstance(v, Reject) and v.reply.code == 550


def test_postmaster_of_our_domains_accepted_without_configuration() -> None:
    # RFC 5321 §4.5.1 / §4.1.1.3: postmaster@<served domain> and <Postmaster> must be accepted.
    for rcpt in ("postmaster@example.test", "PostMaster@Example.TEST", "Postmaster"):
        v = decide(rcpt)
        assert isinstance(v, Accept), rcpt
        assert not v.rule.require_tls
    # ... but not postmaster of a domain we do not serve: that would be relaying.
    v = decide("postmaster@elsewhere.test")
    assert isinstance(v, Reject) and v.reply.enhanced == "5.7.1"


def test_routing_addresses_refused_while_the_daily_case_limit_is_reached() -> None:
    from mailcase.smtp.replies import Reply

    rules = {
        "cases@example.test": AddressRule("cases@example.test", routing=True),
        "plain@example.test": AddressRule("plain@example.test"),
    }
    full = Reply(451, "4.7.1", "Daily case limit reached; try again later")
    v = decide_recipient("cases@example.test", rules, frozenset({"example.test"}),
                         tls_active=False, routing_refusal=full)
    assert isinstance(v, Reject) and v.reply is full
    # plain receiving addresses are not cases: the limit does not apply to them
    v = decide_recipient("plain@example.test", rules, frozenset({"example.test"}),
                         tls_active=False, routing_refusal=full)
    assert isinstance(v, Accept)
    v = decide_recipient("cases@example.test", rules, frozenset({"example.test"}),
                         tls_active=False)
    assert isinstance(v, Accept)
