"""Every message of the corpus, checked field by field.

The corpus imitates what Outlook/Exchange, Gmail, Apple Mail, Thunderbird, Postfix and a
PHP mailer really send (header order, boundaries, encodings), one file per case that the
Email-to-Case feature must get right (issue 3).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

import pytest

from mailcase.mime import Address, AutoReason, InboundEmail, message_id

from .helpers import all_fixtures, parsed, raw
from .tnefbuild import CSV, PDF, build_winmail


def _attachment(email: InboundEmail, filename: str):
    matches = [a for a in email.attachments if a.filename == filename]
    assert len(matches) == 1, [a.filename for a in email.attachments]
    return matches[0]


def _no_active_content(html: str) -> None:
    lowered = html.lower()
    assert "<script" not in lowered
    assert "javascript:" not in lowered
    assert not re.search(r"\son[a-z]+\s*=", lowered), html
    # no remote or relative loads: every src is cid: or data:image
    for src in re.findall(r'\ssrc="([^"]*)"', html):
        assert src.startswith(("cid:", "data:image/")), src
    for banned in ("<iframe", "<object", "<embed", "<link", "<style", "<base", "<meta", "<form",
                   "<svg", "<video", "<audio", "srcset=", "background=", "url(", "poster="):
        assert banned not in lowered, banned


@pytest.mark.parametrize("name", all_fixtures())
def test_every_fixture_is_crlf_and_parses_cleanly(name: str) -> None:
    data = raw(name)
    assert b"\n" not in data.replace(b"\r\n", b""), "bare LF in fixture"
    email = parsed(name)
    assert email.message_id == message_id(data)  # same form as the accept path's scan
    assert email.from_address
    assert email.date is not None
    assert email.subject
    _no_active_content(email.html_body)
    assert not email.text_truncated and not email.headers_truncated
    for a in email.attachments:
        assert a.size == len(a.data)
        assert a.sha256 == hashlib.sha256(a.data).hexdigest()
    assert not any(d.kind == "internal" for d in email.defects)


def test_outlook_html_only_with_external_tag() -> None:
    e = parsed("outlook-html-only-external.eml")
    assert e.subject == "[External] AW: Störung Drucker 3. OG [ thread::Y2FzZS0xMDI3::aGmac ]"
    assert (e.from_address, e.from_name) == ("joerg.mueller@beispiel.de", "Jörg Müller")
    assert e.to == (Address("support@example.test", "support@example.test"),)
    assert e.message_id == (
        "<AM6PR05MB61844C6A0E8C1A9F2D3B7E4ABCF12@AM6PR05MB6184.eurprd05.prod.outlook.com>"
    )
    assert e.in_reply_to == "<mailcase.1027.a1b2c3@example.test>"
    assert e.references == ("<mailcase.1027.a1b2c3@example.test>",)
    assert e.date == datetime(2024, 6, 11, 7, 41, 19, tzinfo=UTC)
    # no text/plain part: the description comes from the HTML
    assert e.text_from_html
    assert e.text_body.startswith("Hallo Support-Team,\n\nder Drucker im 3. OG druckt")
    assert "Können Sie bitte jemanden vorbeischicken?" in e.text_body
    assert "font-family" not in e.text_body and "Cambria" not in e.text_body  # <style> dropped
    assert "<p>Können Sie bitte jemanden vorbeischicken?</p>" in e.html_body
    assert "mso" not in e.html_body.lower() and "<o:p>" not in e.html_body
    assert e.attachments == () and e.defects == ()
    assert not e.auto_submitted
    assert e.header("Thread-Topic") == "[External] AW: =?utf-8?Q?St=C3=B6rung_Drucker_3._OG?="
    assert e.headers[0][0] == "Received"


def test_gmail_multipart_alternative() -> None:
    e = parsed("gmail-alternative.eml")
    assert e.subject == "Dead pixels on 2 of 5 monitors (order #A-20931)"
    assert (e.from_address, e.from_name) == ("priya.raman@gmail.com", "Priya Raman")
    assert e.reply_to == (Address("priya.raman@northwind.example", "Priya Raman"),)
    assert e.cc == (
        Address("facilities@northwind.example", "Facilities, Northwind"),
        Address("tom.baker@northwind.example", ""),
    )
    assert e.text_body.startswith("Hi team,\n\nour order #A-20931 arrived yesterday")
    assert "- MX-27Q-00419\n- MX-27Q-00422" in e.text_body
    assert not e.text_from_html
    assert "<ul><li>MX-27Q-00419</li><li>MX-27Q-00422</li></ul>" in e.html_body
    assert e.attachments == () and e.defects == ()
    assert e.date is not None and e.date.utcoffset().total_seconds() == 7200
    dkim = e.header("dkim-signature")
    assert dkim is not None and dkim.startswith("v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert "\r" not in dkim and "\n" not in dkim and "d=gmail.com;" in dkim  # unfolded


def test_apple_mail_related_cid_image() -> None:
    e = parsed("apple-related-cid.eml")
    assert e.subject == "Erreur sur la page des paramètres"
    assert (e.from_address, e.from_name) == ("luc.dubois@icloud.com", "Luc Dubois")
    assert e.text_body.startswith("Hello,\n\nthe error appears when I open the settings page")
    assert '<img width="240" height="80" src="cid:5A1E2D7C-9B3F-4C1A-8E2D-0F6B7C8D9E01">' in e.html_body
    assert "apple-inline" not in e.html_body  # unknown attributes dropped
    (img,) = e.attachments
    assert img.filename == "Bildschirmfoto 2024-06-11 um 11.58.02.png"
    assert img.content_type == "image/png"
    assert img.content_id == "5A1E2D7C-9B3F-4C1A-8E2D-0F6B7C8D9E01"
    assert img.inline
    assert img.data.startswith(b"\x89PNG\r\n\x1a\n") and img.size == 77
    assert img.part == "2.2"
    assert e.defects == ()


def test_outlook_tnef_winmail_is_unpacked() -> None:
    e = parsed("outlook-tnef-winmail.eml")
    assert e.subject == "Angebot Wartungsvertrag"
    assert (e.from_address, e.from_name) == ("k.weber@weber-haustechnik.example", "Karl Weber")
    # the MIME text/plain (iso-8859-1, quoted-printable) is the body
    assert e.text_body.startswith("Sehr geehrte Damen und Herren,\n\nanbei unser Angebot für")
    assert [a.filename for a in e.attachments] == ["Angebot Wartung 2024.pdf", "Kostenübersicht.csv"]
    pdf = _attachment(e, "Angebot Wartung 2024.pdf")
    assert (pdf.content_type, pdf.size, pdf.data, pdf.part) == ("application/pdf", len(PDF), PDF, "2.t1")
    csv = _attachment(e, "Kostenübersicht.csv")
    assert (csv.content_type, csv.data, csv.inline) == ("text/csv", CSV, False)
    assert "winmail.dat" not in [a.filename for a in e.attachments]
    assert e.defects == ()


def test_tnef_fixture_is_the_builder_output() -> None:
    """The committed winmail.dat is reproducible from tnefbuild.py."""
    import base64

    data = raw("outlook-tnef-winmail.eml").decode()
    b64 = data.split('filename="winmail.dat"\r\n\r\n', 1)[1].split("\r\n--", 1)[0]
    assert base64.b64decode(b64) == build_winmail()


def test_outlook_iso_2022_jp_with_nec_special_characters() -> None:
    e = parsed("outlook-iso-2022-jp.eml")
    assert e.subject == "【至急】請求書の再発行について①"
    assert (e.from_address, e.from_name) == ("h.sato@yamada-shoji.example", "佐藤 花子")
    assert e.text_body.startswith("サポートご担当者様\n\nいつもお世話になっております。\n㈱山田商事の佐藤です。")
    assert "①宛先：経理部 佐藤花子\n②送付方法：PDFでメール" in e.text_body
    assert e.html_body == "" and e.attachments == () and e.defects == ()
    assert e.date is not None and e.date.utcoffset().total_seconds() == 9 * 3600


def test_windows_1252_labelled_utf8() -> None:
    e = parsed("windows-1252-labelled-utf8.eml")
    assert e.subject == "Commande non reçue"
    assert (e.from_address, e.from_name) == ("helene.lefevre@exemple.example", "Hélène Lefèvre")
    assert e.text_body.startswith("Bonjour,\n\nj’ai commandé le modèle « Pro 14 » la semaine")
    assert "(facture n° 88123, 1 249,00 €)" in e.text_body
    assert [(d.part, d.kind) for d in e.defects] == [("1", "charset-fallback")]
    assert "cp1252" in e.defects[0].detail


def test_thunderbird_rfc2231_names_and_format_flowed() -> None:
    e = parsed("thunderbird-rfc2231-names.eml")
    assert e.subject == "Prüfbericht Übergabe Heizungsanlage"
    assert e.to == (Address("support@example.test", "Support"),)
    # format=flowed soft breaks joined, quotes and the signature separator kept
    assert "und das Angebot aus Tokio. Bitte prüfen Sie insbesondere Abschnitt 4" in e.text_body
    assert "\n> Können Sie uns den Bericht bis Freitag schicken?\n" in e.text_body
    assert "\n-- \nAnna Schmidt\n" in e.text_body
    pdf, xlsx = e.attachments
    assert pdf.filename == "Prüfbericht_Übergabe_Heizungsanlage_März_2024_final_mit_Änderungen.pdf"
    assert (pdf.content_type, pdf.size, pdf.inline) == ("application/pdf", 78, False)
    assert pdf.data.startswith(b"%PDF-1.5")
    # continuation split inside a UTF-8 sequence (%E5%B9 | %B4) still decodes
    assert xlsx.filename == "見積書_2024年6月.xlsx"
    assert xlsx.content_type == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert xlsx.size == 134 and xlsx.data.startswith(b"PK\x03\x04")
    assert e.defects == ()


def test_outlook_forward_as_attachment() -> None:
    e = parsed("outlook-forward-attached.eml")
    assert e.subject == "FW: Invoice 2024-0311 charged twice"
    assert e.to == (Address("billing@example.test", "billing@example.test"),)
    assert e.text_body == "Please take care of this one, the customer was charged twice.\n\nMarco\n"
    (fwd,) = e.attachments
    assert fwd.content_type == "message/rfc822"
    assert fwd.filename == "Re_ Invoice 2024-0311 charged twice.eml"
    assert not fwd.inline and fwd.part == "2"
    # the embedded message is kept whole, and parses on its own
    inner = __import__("mailcase.mime", fromlist=["parse_message"]).parse_message(fwd.data)
    assert inner.from_address == "dana.whitfield@gmail.com"
    assert inner.message_id == "<CAF3rXk9B2pQ7vT1mH8sW0yZ4cN6dL5eR2aJ9uV3xY1zK7bM0nQ@mail.gmail.com>"
    assert len(inner.references) == 2
    assert "charged twice on 3 June" in inner.text_body
    # the forwarded text is not mixed into the case description
    assert "Dana" not in e.text_body


def test_out_of_office_auto_reply() -> None:
    e = parsed("outlook-ooo-autoreply.eml")
    assert e.subject == "Automatische Antwort: Ihre Anfrage [ thread::Y2FzZS0xMDI3::aGmac ]"
    assert e.in_reply_to == "<mailcase.1027.d4e5f6@example.test>"
    assert e.auto_submitted.is_automatic
    assert e.auto_submitted.reasons == {AutoReason.AUTO_SUBMITTED, AutoReason.AUTO_RESPONSE_SUPPRESS}
    assert [s.evidence for s in e.auto_submitted.signals] == ["auto-replied", "All"]
    assert e.text_body.startswith("Vielen Dank für Ihre Nachricht. Ich bin bis einschließlich 21.06.2024")
    assert not e.is_dsn and e.delivery_report is None


def test_postfix_dsn() -> None:
    e = parsed("postfix-dsn.eml")
    assert e.subject == "Undelivered Mail Returned to Sender"
    assert e.from_address == "MAILER-DAEMON@mail.example.org"
    assert e.from_name == "Mail Delivery System"
    assert e.is_dsn
    assert e.auto_submitted.reasons == {
        AutoReason.AUTO_SUBMITTED, AutoReason.REPORT, AutoReason.DAEMON_SENDER
    }
    report = e.delivery_report
    assert report is not None
    assert report.reporting_mta == "mail.example.org"
    assert report.original_message_id == "<mailcase.1027.f7a8b9@example.test>"
    (rcpt,) = report.recipients
    assert rcpt.final_recipient == "kunde@nirgendwo.example"
    assert rcpt.original_recipient == "kunde@nirgendwo.example"
    assert (rcpt.action, rcpt.status, rcpt.remote_mta) == ("failed", "5.1.1", "mx.nirgendwo.example")
    assert rcpt.diagnostic_code.startswith("smtp; 550 5.1.1 <kunde@nirgendwo.example>: Recipient address rejected")
    assert e.text_body.startswith("This is the mail system at host mail.example.org.")
    status, returned = e.attachments
    assert (status.content_type, status.filename) == ("message/delivery-status", "delivery-status.txt")
    assert b"Final-Recipient: rfc822; kunde@nirgendwo.example" in status.data
    assert returned.content_type == "message/rfc822"
    assert b"Message-ID: <mailcase.1027.f7a8b9@example.test>" in returned.data


def test_calendar_invitation() -> None:
    e = parsed("outlook-calendar-request.eml")
    assert e.subject == "Übergabe Heizungsanlage"
    assert e.cc == (Address("k.weber@weber-haustechnik.example", "Karl Weber"),)
    assert e.text_body == "Abstimmung zur Übergabe der Heizungsanlage, bitte Prüfbericht mitbringen.\n"
    (ics,) = e.attachments
    assert (ics.filename, ics.content_type, ics.charset, ics.part) == (
        "invite.ics", "text/calendar", "utf-8", "3"
    )
    assert ics.data.startswith(b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST")
    (cal,) = e.calendars
    assert (cal.method, cal.part) == ("REQUEST", "3")
    (ev,) = cal.events
    assert ev.summary == "Übergabe Heizungsanlage"
    assert ev.location == "Besprechungsraum 2, Hauptstraße 5"
    assert ev.organizer == "anna.schmidt@schmidt-haustechnik.example"
    assert ev.attendees == ("support@example.test", "k.weber@weber-haustechnik.example")
    assert ev.uid.startswith("040000008200E00074C5B7101A82E008") and ev.uid.endswith("4E5F6071")
    assert isinstance(ev.start, datetime) and isinstance(ev.end, datetime)
    assert ev.start.astimezone(UTC) == datetime(2024, 6, 18, 8, 0, tzinfo=UTC)  # CEST
    assert ev.end.astimezone(UTC) == datetime(2024, 6, 18, 9, 0, tzinfo=UTC)
    assert (ev.sequence, ev.status) == (0, "CONFIRMED")


def test_hostile_html_is_sanitised() -> None:
    e = parsed("phishy-html-script.eml")
    html = e.html_body
    _no_active_content(html)
    assert "evil.example" not in html and "tracker.example" not in html
    assert '<p style="color:#333;font-size:14px">Dear customer,</p>' in html
    assert '<a href="https://billing.example/invoices/77" rel="noopener noreferrer nofollow">the portal</a>' in html
    assert '<img src="cid:logo@billing.example" alt="inline logo">' in html
    assert "Amount due: 99.00 EUR" in html
    assert "Your invoice" not in html  # <title> content dropped
    assert "document.cookie" not in html
    assert e.text_body.startswith("Dear customer,\n\nPlease review your invoice at https://billing.example/invoices/77")


def test_broken_parts_do_not_fail_the_message() -> None:
    e = parsed("broken-parts.eml")
    assert e.subject == "Export fertig"
    assert e.from_name == "Legacy CRM"
    # unknown charset: decoded by the fallback
    assert e.text_body == "Der Export für Kunde Müller ist fertig.\n"
    binary, zip_ = e.attachments
    # binary bytes in a text/plain part: kept as an octet-stream attachment
    assert (binary.content_type, binary.part, binary.size) == ("application/octet-stream", "2", 26)
    assert binary.data.startswith(b"PK\x03\x04")
    assert (zip_.filename, zip_.content_type) == ("export.zip", "application/zip")
    kinds = {(d.part, d.kind) for d in e.defects}
    assert ("", "mime") in kinds  # no closing boundary
    assert ("1", "charset-fallback") in kinds
    assert ("2", "undecodable-part") in kinds
    assert ("3", "mime") in kinds  # bad base64
    assert any("InvalidBase64" in d.detail for d in e.defects)
