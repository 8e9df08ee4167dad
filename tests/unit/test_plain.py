"""plain.to_csv: the one CSV renderer of the CLI (--csv) and the email log export."""

from __future__ import annotations

import csv
import datetime as dt
import io

from mailcase.plain import csv_cell, to_csv


def test_cells_a_spreadsheet_would_run_get_an_apostrophe() -> None:
    for text in ("=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1"):
        assert csv_cell(text) == "'" + text
    assert csv_cell("a=1") == "a=1" and csv_cell("") == ""


def test_values_are_plain_text() -> None:
    t = dt.datetime(2026, 12, 4, 16, 0, tzinfo=dt.UTC)
    assert [csv_cell(v) for v in (None, True, False, 3, t, ["a@x.test", "b@x.test"])] == [
        "", "true", "false", "3", "2026-12-04T16:00:00+00:00", "a@x.test b@x.test"]


def test_header_row_and_quoting_by_the_csv_module() -> None:
    text = to_csv([{"a": 'x,"y"\r\nz', "b": "-2"}, {"a": None}], ["a", "b"])
    assert text.endswith("\r\n")
    assert list(csv.reader(io.StringIO(text, newline=""))) == [
        ["a", "b"], ['x,"y"\r\nz', "'-2"], ["", ""]]
