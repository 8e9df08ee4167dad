"""The mailbox agent's pure decisions: which UIDs, which queue id, how long to back off."""

from __future__ import annotations

from mailcase.sources.plan import (
    FolderState,
    backoff_delay,
    queue_id_for,
    search_criteria,
    start_from,
    uids_to_take,
)


def test_start_from_keeps_the_last_uid_only_while_uidvalidity_holds() -> None:
    assert start_from(None, 7) == 0
    assert start_from(FolderState(7, 41), 7) == 41
    # RFC 3501 §2.3.1.1: a new UIDVALIDITY renumbers the folder; every UID is new to us.
    assert start_from(FolderState(7, 41), 8) == 0


def test_search_leaves_read_mail_alone_only_when_marking_seen() -> None:
    assert search_criteria("seen", 41) == ["UID", "42:*", "UNSEEN"]
    assert search_criteria("move", 0) == ["UID", "1:*"]
    assert search_criteria("delete", 3) == ["UID", "4:*"]


def test_uids_to_take_drops_the_star_match_below_the_range_and_bounds_the_batch() -> None:
    # RFC 3501 §6.4.8: "42:*" matches the highest UID even when it is 41.
    assert uids_to_take([41], 41, 100) == []
    assert uids_to_take([50, 43, 42, 43], 41, 2) == [42, 43]


def test_queue_ids_are_stable_per_message_and_never_look_like_smtp_ones() -> None:
    a = queue_id_for("tok", 7, 42)
    assert a == queue_id_for("tok", 7, 42)
    assert len({a, queue_id_for("tok", 7, 43), queue_id_for("tok", 8, 42),
                queue_id_for("other", 7, 42)}) == 4
    assert len(a) == 16 and a.startswith("I")  # SMTP queue ids are 16 hex digits


def test_backoff_doubles_up_to_the_cap() -> None:
    assert backoff_delay(0, 10, 900) == 0
    assert [backoff_delay(n, 10, 900) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert backoff_delay(10, 10, 900) == 900
    assert backoff_delay(10_000, 10, 900) == 900  # no overflow after a long outage


def test_batches_are_bounded_by_count_and_bytes_a_big_message_alone() -> None:
    from mailcase.sources.plan import batches

    sizes = {5: 10, 1: 10, 2: 10, 3: 10, 4: 10}
    assert batches(sizes, 2, 1000) == [[1, 2], [3, 4], [5]]
    assert batches({1: 40, 2: 40, 3: 100, 4: 5}, 10, 100) == [[1, 2], [3], [4]]
    assert batches({}, 10, 100) == []
