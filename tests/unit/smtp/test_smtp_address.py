"""The RFC 5321 path grammar for MAIL FROM / RCPT TO."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcase.smtp.address import AddressError, Path, parse_mail_from, parse_rcpt_to


@pytest.mark.parametrize(
    ("arg", "address", "local", "domain", "params"),
    [
        ("FROM:<a@b.test>", "a@b.test", "a", "b.test", {}),
        ("from:<a@b.test>", "a@b.test", "a", "b.test", {}),
        ("FROM: <a@b.test>", "a@b.test", "a", "b.test", {}),  # lenient, like Postfix
        ("FROM:<>", "", "", "", {}),
        ("FROM:<> BODY=8BITMIME", "", "", "", {"BODY": "8BITMIME"}),
        (
            "FROM:<a@b.test> size=100 body=7bit",
            "a@b.test",
            "a",
            "b.test",
            {"SIZE": "100", "BODY": "7bit"},
        ),
        (
            "FROM:<a@b.test> SMTPUTF8 REQUIRETLS",
            "a@b.test",
            "a",
            "b.test",
            {"SMTPUTF8": None, "REQUIRETLS": None},
        ),
        ("FROM:<@relay1.test,@relay2.test:u@d.test>", "u@d.test", "u", "d.test", {}),
        ('FROM:<"john doe"@b.test>', '"john doe"@b.test', '"john doe"', "b.test", {}),
        ('FROM:<"a>b\\"c"@b.test>', '"a>b\\"c"@b.test', '"a>b\\"c"', "b.test", {}),
        (
            "FROM:<first.last+tag@Sub.Example.TEST>",
            "first.last+tag@Sub.Example.TEST",
            "first.last+tag",
            "Sub.Example.TEST",
            {},
        ),
        ("FROM:<u@[192.0.2.1]>", "u@[192.0.2.1]", "u", "[192.0.2.1]", {}),
        ("FROM:<u@[IPv6:2001:db8::1]>", "u@[IPv6:2001:db8::1]", "u", "[IPv6:2001:db8::1]", {}),
        ("FROM:<u@[x-tag:anything]>", "u@[x-tag:anything]", "u", "[x-tag:anything]", {}),
        (
            "FROM:<!#$%&'*+-/=?^_`{|}~@b.test>",
            "!#$%&'*+-/=?^_`{|}~@b.test",
            "!#$%&'*+-/=?^_`{|}~",
            "b.test",
            {},
        ),
    ],
)
def test_mail_from_valid(arg, address, local, domain, params):
    path, got_params = parse_mail_from(arg, smtputf8=True)
    assert path == Path(address, local, domain)
    assert got_params == params


@pytest.mark.parametrize(
    ("arg", "code", "enhanced"),
    [
        ("FROM:a@b.test", 501, "5.1.7"),  # missing angle brackets
        ("FROM: a@b.test", 501, "5.1.7"),
        ("FROM:<a@b.test", 501, "5.1.7"),
        ("FROM:<a@b.test>x", 501, "5.1.7"),
        ("FROM:<a b@b.test>", 501, "5.1.7"),
        ("FROM:<a@b..test>", 501, "5.1.7"),
        ("FROM:<a@-b.test>", 501, "5.1.7"),
        ("FROM:<a@b-.test>", 501, "5.1.7"),
        ("FROM:<a@b.test.>", 501, "5.1.7"),
        ("FROM:<.a@b.test>", 501, "5.1.7"),
        ("FROM:<a..b@b.test>", 501, "5.1.7"),
        ("FROM:<a@>", 501, "5.1.7"),
        ("FROM:<a>", 501, "5.1.7"),  # only RCPT TO:<Postmaster> may omit the domain
        ("FROM:<u@[300.1.1.1]>", 501, "5.1.7"),
        ("FROM:<u@[IPv6:zz::1]>", 501, "5.1.7"),
        ("FROM:<a@b.test> =x", 501, "5.5.4"),
        ("FROM:<a@b.test> A=b=c", 501, "5.5.4"),
        ("FROM:<a@b.test> X=1 x=2", 501, "5.5.4"),
        ("TO:<a@b.test>", 501, "5.5.4"),
        ("", 501, "5.5.4"),
        ("FROM:<jörg@b.test>", 553, "5.6.7"),  # UTF-8 without the SMTPUTF8 parameter
        ("FROM:<a@b.test> X=ü", 501, "5.5.4"),  # UTF-8 parameter without SMTPUTF8
    ],
)
def test_mail_from_invalid(arg, code, enhanced):
    with pytest.raises(AddressError) as info:
        parse_mail_from(arg, smtputf8=True)
    assert (info.value.reply.code, info.value.reply.enhanced) == (code, enhanced)
    assert isinstance(info.value, ValueError)


def test_utf8_only_with_smtputf8():
    path, params = parse_mail_from("FROM:<jörg@bücher.test> SMTPUTF8", smtputf8=True)
    assert path.local_part == "jörg" and path.domain == "bücher.test"
    assert params == {"SMTPUTF8": None}
    with pytest.raises(AddressError) as info:
        parse_mail_from("FROM:<jörg@bücher.test> SMTPUTF8", smtputf8=False)
    assert info.value.reply.code == 553
    path, _ = parse_rcpt_to("TO:<用户@例子.test>", smtputf8=True)
    assert path.address == "用户@例子.test"
    with pytest.raises(AddressError) as info:
        parse_rcpt_to("TO:<用户@例子.test>", smtputf8=False)
    assert info.value.reply.code == 553
    # A quoted local part may carry UTF-8 too (RFC 6531 §3.3).
    path, _ = parse_rcpt_to('TO:<"jörg x"@b.test>', smtputf8=True)
    assert path.local_part == '"jörg x"'


def test_rcpt_to():
    assert parse_rcpt_to("TO:<b@mx.test>", smtputf8=False) == (
        Path("b@mx.test", "b", "mx.test"),
        {},
    )
    assert parse_rcpt_to("to: <Postmaster>", smtputf8=False)[0] == Path(
        "Postmaster", "Postmaster", ""
    )
    assert parse_rcpt_to("TO:<postmaster>", smtputf8=False)[0].address == "postmaster"
    for bad, enhanced in [
        ("TO:b@mx.test", "5.1.3"),
        ("TO:<>", "5.1.3"),  # null path only as reverse-path
        ("TO:<someone>", "5.1.3"),
        ("FROM:<b@mx.test>", "5.5.4"),
    ]:
        with pytest.raises(AddressError) as info:
            parse_rcpt_to(bad, smtputf8=False)
        assert info.value.reply.enhanced == enhanced, bad


def test_length_limits():
    # RFC 5321 §4.5.3.1: local part 64, domain 255, path 256 octets.
    label = "a" * 63
    domain_253 = ".".join([label, label, label, "a" * 61])
    assert len(domain_253) == 253
    ok = f"TO:<{'l' * 64}@{'d' * 60}.test>"
    assert parse_rcpt_to(ok, smtputf8=False)[0].local_part == "l" * 64
    for bad in (
        f"TO:<{'l' * 65}@b.test>",
        f"TO:<x@{domain_253}.b>",  # domain 256
        f"TO:<{'l' * 64}@{domain_253[:190]}>",  # path 2+64+1+190 = 257
    ):
        with pytest.raises(AddressError) as info:
            parse_rcpt_to(bad, smtputf8=False)
        assert info.value.reply.code == 501
        assert "too long" in info.value.reply.text
    # Octets, not characters: 22 three-octet characters are 66 octets.
    with pytest.raises(AddressError):
        parse_rcpt_to(f"TO:<{'用' * 22}@b.test>", smtputf8=True)


def test_normalized_lowercases_only_the_domain():
    path, _ = parse_rcpt_to("TO:<John.Doe@Example.TEST>", smtputf8=False)
    assert path.address == "John.Doe@Example.TEST"
    assert path.normalized == "John.Doe@example.test"
    assert parse_mail_from("FROM:<>", smtputf8=False)[0].normalized == ""
    assert parse_rcpt_to("TO:<Postmaster>", smtputf8=False)[0].normalized == "Postmaster"
    assert str(path) == "John.Doe@Example.TEST"
    assert not path.is_null


@given(st.text(max_size=300))
def test_never_raises_anything_but_address_error(arg):
    for smtputf8 in (False, True):
        for parse in (parse_mail_from, parse_rcpt_to):
            try:
                path, params = parse(arg, smtputf8=smtputf8)
            except AddressError as e:
                assert e.reply.code in (501, 553)
            else:
                assert isinstance(path, Path)
                assert all(k == k.upper() for k in params)


@given(
    st.from_regex(
        r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\.[A-Za-z0-9-]{1,10}){0,3}", fullmatch=True
    ),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){1,3}", fullmatch=True),
)
def test_roundtrip_of_generated_addresses(local, domain):
    path, _ = parse_rcpt_to(f"TO:<{local}@{domain}>", smtputf8=False)
    assert path == Path(f"{local}@{domain}", local, domain)


def test_parse_mailbox_for_configured_addresses():
    from mailcase.smtp.address import parse_mailbox

    assert parse_mailbox("Support@Example.TEST") == "Support@example.test"
    for bad in ("support", "<a@b.test>", "a@[192.0.2.1]", "a b@c.test", ""):
        with pytest.raises(AddressError):
            parse_mailbox(bad)
