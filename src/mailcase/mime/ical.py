"""A summary of text/calendar parts (iTIP invitations), parsed with icalendar.

The part itself is always kept as an attachment (the agent's calendar client needs the exact
bytes); the summary is what a case page shows and is absent when the text is not valid iCalendar.
icalendar accepts broken property values as `vBroken`, so every value is read defensively.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import icalendar

from mailcase.mime.model import CalendarEvent, CalendarInfo

__all__ = ["parse_calendar"]

_MAX_EVENTS = 50
_MAX_ATTENDEES = 200


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value).strip()


def _when(value: Any) -> datetime | date | None:
    dt = getattr(value, "dt", None)
    return dt if isinstance(dt, date) else None  # datetime is a date subclass


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _mailbox(value: Any) -> str:
    text = _text(value)
    return text[7:] if text.lower().startswith("mailto:") else text


def parse_calendar(data: bytes, part: str) -> CalendarInfo | None:
    """The METHOD and VEVENTs of an iCalendar object; None when it does not parse."""
    try:
        cal = icalendar.Calendar.from_ical(data)
        events: list[CalendarEvent] = []
        for ev in cal.walk("VEVENT")[:_MAX_EVENTS]:
            attendees = ev.get("ATTENDEE")
            if attendees is None:
                attendees = []
            elif not isinstance(attendees, list):
                attendees = [attendees]
            events.append(
                CalendarEvent(
                    uid=_text(ev.get("UID")),
                    summary=_text(ev.get("SUMMARY")),
                    start=_when(ev.get("DTSTART")),
                    end=_when(ev.get("DTEND")),
                    location=_text(ev.get("LOCATION")),
                    organizer=_mailbox(ev.get("ORGANIZER")),
                    attendees=tuple(_mailbox(a) for a in attendees[:_MAX_ATTENDEES]),
                    sequence=_int(ev.get("SEQUENCE")),
                    status=_text(ev.get("STATUS")).upper(),
                )
            )
        method = _text(cal.get("METHOD")).upper()
        return CalendarInfo(method=method, events=tuple(events), part=part)
    except Exception:  # noqa: BLE001 - icalendar raises ValueError and friends on garbage; never fail a message
        return None
