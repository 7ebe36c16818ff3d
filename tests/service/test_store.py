"""The Store port's contract, on both stores: what the use cases rely on (leases,
the upsert guard, offsets, atomic transactions) and what operators see."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from consumer.adapters.postgres.store import PostgresStore
from consumer.domain.model import (
    Booking,
    Conversation,
    Followup,
    Removed,
    Score,
    Status,
    TriggerType,
    UserState,
)
from consumer.service.ports import (
    BatchKeys,
    CancelResult,
    Executed,
    Figures,
    FollowupView,
    Store,
    ValueRefused,
)
from tests.service.conftest import T0, custom, seed

S = timedelta(seconds=1)
LEASE = timedelta(seconds=30)


class Boom(Exception):
    pass


async def view_of(store: Store, id_: str) -> FollowupView:
    view = await store.get_followup(id_)
    assert view is not None, id_
    return view


async def status_of(store: Store, id_: str) -> str:
    return (await view_of(store, id_)).status


# --- ingest: offsets, atomicity, values -----------------------------------------------


async def test_offsets_never_move_backwards(store: Store) -> None:
    a, b = ("in", 0), ("in", 1)
    async with store.transaction() as tx:
        assert await tx.lock_offsets([a, b]) == {}
        await tx.save(await tx.lock_and_load(BatchKeys(frozenset()), T0), {a: 10, b: 3})
    async with store.transaction() as tx:
        assert await tx.lock_offsets([b, a]) == {a: 10, b: 3}
        await tx.save(await tx.lock_and_load(BatchKeys(frozenset()), T0), {a: 5, b: 7})
    assert await store.load_offsets([a, b, ("in", 2)]) == {a: 10, b: 7}
    assert await store.load_offsets([]) == {}


async def test_a_transaction_that_raises_leaves_nothing(store: Store) -> None:
    async def batch_then_crash() -> None:
        async with store.transaction() as tx:
            ws = await tx.lock_and_load(BatchKeys(frozenset({"user-1"})), T0)
            ws.apply([custom(1, T0)])
            await tx.save(ws, {("in", 0): 5})
            raise Boom

    with pytest.raises(Boom):
        await batch_then_crash()
    assert await store.get_followup("f-0001") is None
    assert await store.load_offsets([("in", 0)]) == {}
    # Not even the row the lock seeded.
    assert (await store.erase_user("user-1"))["user_projection"] == 0


async def test_rows_seeded_for_a_lock_stay_and_only_known_users_are_erased(store: Store) -> None:
    async with store.transaction() as tx:
        ws = await tx.lock_and_load(
            BatchKeys(frozenset({"user-1"}), frozenset({"bk-1"}), frozenset({"conv-1"})), T0
        )
        assert (ws.users, ws.bookings, ws.conversations) == (
            {"user-1": UserState("user-1")},
            {},
            {},
        )
        await tx.save(ws, {})
    await seed(store, [custom(1, T0), custom(2, T0)], T0)
    # The booking and conversation rows have no user yet: they are nobody's.
    assert await store.erase_user("user-1") == {
        "scheduled_followups": 1,
        "booking_projection": 0,
        "conversation_emotions": 0,
        "user_projection": 1,
    }
    assert await store.get_followup("f-0001") is None
    assert await store.get_followup("f-0002") is not None


async def test_values_postgresql_cannot_store_are_refused_and_nothing_is_kept(store: Store) -> None:
    with pytest.raises(ValueRefused):
        async with store.transaction() as tx:
            await tx.lock_and_load(BatchKeys(frozenset({"u" * 256})), T0)
    for message in ("nul \x00 inside", "lone \ud800 surrogate"):
        with pytest.raises(ValueRefused):
            await seed(store, [replace(custom(1, T0), custom_message=message)], T0)
    assert await store.get_followup("f-0001") is None
    assert (await store.erase_user("user-1"))["user_projection"] == 0


# --- dispatch: leases ---------------------------------------------------------------------


async def test_a_claim_is_a_lease_that_others_may_take_once_it_runs_out(store: Store) -> None:
    [fid] = await seed(store, [custom(1, T0)], T0)
    [claimed] = await store.claim_due("a", T0, LEASE, 10)
    assert claimed.followup.id == fid
    assert (claimed.retry_count, claimed.followup.status, claimed.followup.in_flight) == (
        0,
        Status.PENDING,
        False,
    )
    assert claimed.followup.custom_message == "message 1"
    assert await store.claim_due("b", T0 + 10 * S, LEASE, 10) == []
    assert await store.next_due_at(T0 + 10 * S) is None
    # `lease_until < now`: at the very instant it runs out it is not free yet.
    assert await store.claim_due("b", T0 + LEASE, LEASE, 10) == []
    later = T0 + LEASE + timedelta(microseconds=1)
    assert await store.next_due_at(later) == T0
    assert [c.followup.id for c in await store.claim_due("b", later, LEASE, 10)] == [fid]

    # The first owner lost it: its outcome is not recorded.
    assert await store.mark_executed("a", [Executed(fid, "custom", "hi")], later) == 0
    assert await store.mark_expired("a", [fid]) == 0
    await store.mark_publish_failed("a", fid, "late", None)
    assert await status_of(store, fid) == "pending"

    assert await store.mark_executed("b", [Executed(fid, "custom", "hi")], later) == 1
    view = await view_of(store, fid)
    assert (view.status, view.executed_at, view.template_id, view.message_content) == (
        "executed",
        later,
        "custom",
        "hi",
    )
    assert await store.mark_executed("b", [Executed(fid, "custom", "again")], later) == 0
    assert await store.claim_due("c", later + LEASE * 2, LEASE, 10) == []


async def test_claims_take_the_earliest_due_first_up_to_the_limit(store: Store) -> None:
    await seed(
        store,
        [custom(1, T0 - 60 * S), custom(2, T0 - 120 * S), custom(3, T0 + 60 * S)],
        T0,
    )
    assert [c.followup.id for c in await store.claim_due("a", T0, LEASE, 1)] == ["f-0002"]
    assert [c.followup.id for c in await store.claim_due("a", T0, LEASE, 5)] == ["f-0001"]
    assert await store.claim_due("a", T0, LEASE, 5) == []
    assert await store.next_due_at(T0) == T0 + 60 * S


async def test_a_loaded_followup_is_in_flight_while_its_lease_runs(store: Store) -> None:
    [fid] = await seed(store, [custom(1, T0)], T0)
    await store.claim_due("a", T0, LEASE, 10)
    for now, in_flight in ((T0 + 10 * S, True), (T0 + LEASE, False), (T0 + 2 * LEASE, False)):
        async with store.transaction() as tx:
            ws = await tx.lock_and_load(BatchKeys(frozenset({"user-1"})), now)
            await tx.save(ws, {})
        assert ws.followups[fid].in_flight is in_flight, now


async def test_a_failed_attempt_backs_off_counts_or_gives_up(store: Store) -> None:
    [f1, f2, f3] = await seed(store, [custom(1, T0), custom(2, T0), custom(3, T0)], T0)
    await store.claim_due("a", T0, LEASE, 10)
    await store.mark_publish_failed("a", f1, "E" * 3000, T0 + 5 * S)
    await store.mark_publish_failed("a", f2, "broker away", T0 + 7 * S, counts=False)
    await store.mark_publish_failed("a", f3, "too many", None)
    await store.mark_publish_failed("someone-else", f1, "not mine", None)

    v1, v2, v3 = [await view_of(store, f) for f in (f1, f2, f3)]
    assert (v1.status, v1.retry_count, v1.error_message) == ("pending", 1, "E" * 2000)
    assert (v2.status, v2.retry_count, v2.error_message) == ("pending", 0, "broker away")
    # Given up: no retry was given for that failure, so none is counted.
    assert (v3.status, v3.retry_count, v3.error_message) == ("failed", 0, "too many")
    # Released at once, due again at retry_at; scheduled_at stays as it was.
    assert v1.scheduled_at == T0
    assert await store.next_due_at(T0) == T0 + 5 * S
    assert await store.claim_due("b", T0 + 4 * S, LEASE, 10) == []
    assert [c.followup.id for c in await store.claim_due("b", T0 + 5 * S, LEASE, 10)] == [f1]
    [again] = await store.claim_due("b", T0 + 7 * S, LEASE, 10)
    assert (again.followup.id, again.retry_count) == (f2, 0)


async def test_only_the_owner_expires_a_pending_followup(store: Store) -> None:
    [f1, f2] = await seed(store, [custom(1, T0), custom(2, T0)], T0)
    await store.claim_due("a", T0, LEASE, 10)
    assert await store.mark_expired("b", [f1, f2]) == 0
    assert await store.mark_expired("a", [f1, f1]) == 1
    assert await store.mark_executed("a", [Executed(f1, "t", "m")], T0) == 0
    assert (await status_of(store, f1), await status_of(store, f2)) == ("expired", "pending")
    assert await store.mark_expired("a", []) == 0
    assert await store.mark_executed("a", [], T0) == 0


# --- what ingest loads, and what it may delete (issue 10: order does not matter) ---------------


def post_event(n: int, user: str, bookings: tuple[str, ...], status: Status) -> Followup:
    return Followup(
        id=f"pe-{n}",
        user_id=user,
        conversation_id="conv-pe",
        trigger_type=TriggerType.POST_EVENT,
        scheduled_at=T0 + timedelta(days=n),
        status=status,
        booking_ids=bookings,
        active_booking_ids=bookings if status is not Status.CANCELLED else (),
    )


async def test_ingest_loads_the_chains_its_booking_events_can_change(store: Store) -> None:
    def booking(n: int, user: str, days: int) -> Booking:
        # Linked to its post-event row, as the rules leave every confirmed booking.
        return Booking(
            f"bk-{n}",
            user,
            event_date=T0 + timedelta(days=days),
            confirmed_at=T0,
            followup_id=f"pe-{n}",
        )

    # user-1: one chain of three bookings on day 9 (each its own row here), a
    # booking far from it (day 40) in a chain of its own, and one cancelled before
    # its confirmation came (in no chain).
    bookings = [
        booking(1, "user-1", 9),
        booking(2, "user-1", 9),
        booking(3, "user-1", 9),
        booking(4, "user-2", 9),
        booking(7, "user-1", 40),
        Booking("bk-8", "user-1", cancelled_at=T0),
    ]
    rows = [
        post_event(1, "user-1", ("bk-1",), Status.PENDING),
        post_event(2, "user-1", ("bk-2",), Status.CANCELLED),
        post_event(3, "user-1", ("bk-3",), Status.EXPIRED),
        post_event(4, "user-2", ("bk-4",), Status.PENDING),
        post_event(7, "user-1", ("bk-7",), Status.PENDING),
    ]
    checkins = [
        replace(custom(n, T0, user="user-1"), id=f"ci-{n}", trigger_type=TriggerType.EMOTION_BASED)
        for n in (5, 6)
    ]
    async with store.transaction() as tx:
        keys = BatchKeys(
            frozenset({"user-1", "user-2"}),
            frozenset(b.booking_id for b in bookings),
            frozenset({"conv-5", "conv-6"}),
            booking_user_ids=frozenset({"user-1", "user-2"}),
        )
        ws = await tx.lock_and_load(keys, T0)
        ws.apply(
            [
                *bookings,
                *(Conversation(f"conv-{n}", "user-1") for n in (5, 6)),
                *rows,
                *checkins,
            ]
        )
        await tx.save(ws, {})
    # A batch with one booking event of user-1 (bk-1, day 9) and one score of conv-5.
    async with store.transaction() as tx:
        keys = BatchKeys(
            frozenset({"user-1"}),
            frozenset({"bk-1"}),
            frozenset({"conv-5"}),
            booking_user_ids=frozenset({"user-1"}),
            booking_refs=frozenset({("user-1", "bk-1")}),
        )
        ws = await tx.lock_and_load(keys, T0)
        loaded = sorted(b.booking_id for b in ws.bookings_of("user-1"))
        rows_loaded = sorted(f.id for f in ws.post_event_followups("user-1"))
        if isinstance(store, PostgresStore):
            # The chain a month away cannot change: neither read nor the rules' to
            # touch; nor can the booking not confirmed, in no chain.
            assert (loaded, rows_loaded) == (["bk-1", "bk-2", "bk-3"], ["pe-1", "pe-2", "pe-3"])
            # Still counted against the per-user limit, being pending.
            assert {"pe-1", "pe-7"} <= {f.id for f in ws.pending_followups("user-1")}
        else:
            # The memory store, the reference, loads all of the user's.
            assert loaded == ["bk-1", "bk-2", "bk-3", "bk-7", "bk-8"]
            assert rows_loaded == ["pe-1", "pe-2", "pe-3", "pe-7"]
        assert [f.id for f in ws.checkins("conv-5")] == ["ci-5"]
        assert list(ws.bookings_of("user-2")) == []
    # A confirmation that moves bk-7 to day 10 touches both chains: all of them.
    async with store.transaction() as tx:
        keys = BatchKeys(
            frozenset({"user-1"}),
            frozenset({"bk-7"}),
            booking_user_ids=frozenset({"user-1"}),
            booking_dates=frozenset({("user-1", T0 + timedelta(days=10))}),
            booking_refs=frozenset({("user-1", "bk-7")}),
        )
        ws = await tx.lock_and_load(keys, T0)
        assert {"bk-1", "bk-2", "bk-3", "bk-7"} <= {b.booking_id for b in ws.bookings_of("user-1")}
        if isinstance(store, PostgresStore):
            assert "bk-8" not in {b.booking_id for b in ws.bookings_of("user-1")}
        assert sorted(f.id for f in ws.post_event_followups("user-1")) == [
            "pe-1",
            "pe-2",
            "pe-3",
            "pe-7",
        ]
    # Its confirmation names it: loaded, with the chain it joins (day 9).
    async with store.transaction() as tx:
        keys = BatchKeys(
            frozenset({"user-1"}),
            frozenset({"bk-8"}),
            booking_user_ids=frozenset({"user-1"}),
            booking_dates=frozenset({("user-1", T0 + timedelta(days=9))}),
            booking_refs=frozenset({("user-1", "bk-8")}),
        )
        ws = await tx.lock_and_load(keys, T0)
        assert {"bk-1", "bk-2", "bk-3", "bk-8"} <= {b.booking_id for b in ws.bookings_of("user-1")}


async def test_ingest_deletes_only_rows_the_rules_may_change(store: Store) -> None:
    f1, f2, f3, f4, f5, f6 = (custom(n, T0, user="user-1") for n in range(1, 7))
    await seed(store, [f1, f2, f3, f4, f5, f6], T0)
    claimed = {c.followup.id for c in await store.claim_due("a", T0, LEASE, 10)}
    assert claimed == {f.id for f in (f1, f2, f3, f4, f5, f6)}
    await store.mark_executed("a", [Executed(f2.id, "t", "m")], T0)
    await store.mark_expired("a", [f5.id])
    await store.mark_publish_failed("a", f1.id, "oops", T0 + S)  # released, still pending
    await store.mark_publish_failed("a", f3.id, "oops", T0 + S)
    assert await store.cancel_followup(f3.id, T0 + 2 * S) is CancelResult.CANCELLED
    async with store.transaction() as tx:
        ws = await tx.lock_and_load(BatchKeys(frozenset({"user-1"})), T0 + 3 * S)
        # f4 and f6 are still leased by "a"; f6's lease has run out by this `now`.
        ws.apply([Removed(f) for f in (f1, f2, f3, f4, replace(f5, status=Status.EXPIRED), f6)])
        await tx.save(ws, {})
    async with store.transaction() as tx:
        ws = await tx.lock_and_load(BatchKeys(frozenset({"user-1"})), T0 + LEASE + S)
        ws.apply([Removed(f6)])
        await tx.save(ws, {})
    left = {f.id: (await store.get_followup(f.id)) for f in (f1, f2, f3, f4, f5, f6)}
    # Pending (f1), expired (f5), leased past its lease (f6): gone. Executed (f2),
    # cancelled by an operator (f3), under a live lease (f4): kept.
    assert {k for k, v in left.items() if v is not None} == {f2.id, f3.id, f4.id}
    assert await status_of(store, f3.id) == "cancelled"


# --- the upsert guard -------------------------------------------------------------------------


async def save_versions(store: Store, *followups: Followup) -> None:
    """A (possibly stale) decision about existing follow-ups, written as ingest writes it."""
    async with store.transaction() as tx:
        ws = await tx.lock_and_load(BatchKeys(frozenset(f.user_id for f in followups)), T0)
        ws.apply(followups)
        await tx.save(ws, {})


async def test_ingest_changes_only_open_followups_nobody_holds(store: Store) -> None:
    f1, f2, f3, f4 = (custom(n, T0) for n in range(1, 5))
    await seed(store, [f1, f2, f3, f4], T0)
    await store.claim_due("a", T0, LEASE, 10)
    await store.mark_executed("a", [Executed(f2.id, "t", "m")], T0)
    await store.mark_expired("a", [f3.id])
    await store.mark_publish_failed("a", f4.id, "oops", T0 + 5 * S)
    # f1 is still leased by "a".
    later = T0 + timedelta(hours=3)
    await save_versions(
        store,
        replace(f1, status=Status.CANCELLED, cancelled_at=T0),
        replace(f2, scheduled_at=later),
        replace(f3, scheduled_at=later, status=Status.PENDING),
        replace(f4, scheduled_at=later, user_id="someone-else", conversation_id="conv-x"),
    )
    v1, v2, v3, v4 = [await view_of(store, f.id) for f in (f1, f2, f3, f4)]
    assert (v1.status, v1.cancelled_at) == ("pending", None)
    assert (v2.status, v2.scheduled_at) == ("executed", T0)
    assert (v3.status, v3.scheduled_at) == ("pending", later)
    # Moved: due at the new time (the retry backoff is gone); user_id is never updated.
    assert (v4.status, v4.scheduled_at, v4.retry_count) == ("pending", later, 1)
    assert (v4.user_id, v4.conversation_id) == ("user-4", "conv-x")
    assert await store.next_due_at(T0 + LEASE * 2) == T0  # f1, its lease run out
    assert sorted(c.followup.id for c in await store.claim_due("b", later, LEASE, 10)) == [
        f1.id,
        f3.id,
        f4.id,
    ]


# --- dispatch: what firing reads ---------------------------------------------------------------


async def test_firing_facts_come_from_the_projections(store: Store) -> None:
    score = Score("m1", T0 - 60 * S, 0.25)
    async with store.transaction() as tx:
        ws = await tx.lock_and_load(
            BatchKeys(
                frozenset({"u1", "u2"}), frozenset({"b1", "b2"}), frozenset({"c1", "c-empty"})
            ),
            T0,
        )
        ws.apply(
            [
                UserState("u1", last_activity_at=T0 - 60 * S, timezone="Europe/Paris"),
                Booking("b1", "u1", event_date=T0, confirmed_at=T0 - 3600 * S),
                Booking("b2", "u2", confirmed_at=T0 - 3600 * S, cancelled_at=T0 - 60 * S),
                Conversation("c1", "u1", scores=(score,)),
            ]
        )
        await tx.save(ws, {})
    f1 = replace(custom(1, T0, user="u1"), conversation_id="c1")
    f2 = replace(custom(2, T0, user="u2"), conversation_id="c-empty")
    f3 = replace(custom(3, T0, user="u3"), conversation_id="")
    facts = await store.firing_facts([f1, f2, f3])
    assert dict(facts.scores) == {"c1": (score,), "c-empty": ()}
    assert dict(facts.last_activity) == {"u1": T0 - 60 * S}
    assert dict(facts.timezones) == {"u1": "Europe/Paris"}
    assert facts.users_with_live_booking == frozenset({"u1"})


# --- periodic work -----------------------------------------------------------------------------


def reengagement(n: int, user: str, basis: object, status: Status) -> Followup:
    assert basis is None or hasattr(basis, "isoformat")
    return Followup(
        id=f"re-{n}",
        user_id=user,
        conversation_id="",
        trigger_type=TriggerType.RE_ENGAGEMENT,
        scheduled_at=T0,
        status=status,
        activity_basis=basis,  # type: ignore[arg-type]
    )


async def test_sweep_candidates_are_idle_users_without_a_current_reengagement(
    store: Store,
) -> None:
    idle = T0 - timedelta(days=40)
    users = [
        UserState("a-idle", last_activity_at=idle),
        UserState("b-pending", last_activity_at=idle),
        UserState("c-sent-for-this", last_activity_at=idle),
        UserState("d-sent-for-older", last_activity_at=idle),
        UserState("e-expired", last_activity_at=idle),
        UserState("f-active", last_activity_at=T0 - timedelta(days=1)),
        UserState("g-never"),
        UserState("h-idle", last_activity_at=idle),
    ]
    async with store.transaction() as tx:
        ws = await tx.lock_and_load(BatchKeys(frozenset(u.user_id for u in users)), T0)
        ws.apply(users)
        ws.apply(
            [
                reengagement(1, "b-pending", idle - timedelta(days=5), Status.PENDING),
                reengagement(2, "c-sent-for-this", idle, Status.EXECUTED),
                reengagement(3, "d-sent-for-older", idle - timedelta(days=5), Status.FAILED),
                reengagement(4, "e-expired", idle, Status.EXPIRED),
            ]
        )
        await tx.save(ws, {})
    since = T0 - timedelta(days=30)
    found = await store.inactive_without_reengagement(since, "", 100)
    assert found == ["a-idle", "d-sent-for-older", "e-expired", "h-idle"]
    assert await store.inactive_without_reengagement(since, "", 2) == found[:2]
    assert await store.inactive_without_reengagement(since, "d-sent-for-older", 100) == found[2:]


async def test_retention_deletes_executed_followups_older_than_the_cutoff(store: Store) -> None:
    ids = await seed(store, [custom(n, T0) for n in range(1, 5)], T0)
    await store.claim_due("a", T0, LEASE, 10)
    await store.mark_executed("a", [Executed(ids[0], "t", "m")], T0 - timedelta(days=100))
    await store.mark_executed("a", [Executed(ids[1], "t", "m")], T0)
    await store.mark_publish_failed("a", ids[2], "x", None)
    assert await store.delete_executed_before(T0 - timedelta(days=90)) == 1
    assert [await store.get_followup(i) is None for i in ids] == [True, False, False, False]


async def test_one_holder_per_job(store: Store) -> None:
    async with (
        store.exclusive("sweep") as first,
        store.exclusive("sweep") as second,
        store.exclusive("retention") as other,
    ):
        assert (first, second, other) == (True, False, True)
    async with store.exclusive("sweep") as again:
        assert again


# --- operations --------------------------------------------------------------------------------


async def test_operators_list_get_cancel_and_count(store: Store) -> None:
    made = [
        custom(1, T0 - 60 * S, user="u1"),
        custom(2, T0 + 60 * S, user="u1"),
        custom(3, T0 + 60 * S, user="u2"),
        custom(4, T0 + 120 * S, user="u2"),
    ]
    ids = [f.id for f in made]
    # Created in another order than their times: the list is newest first by
    # creation (created_at), not by scheduled_at; one transaction's by id.
    for f in (made[2], made[0]):
        await seed(store, [f], T0)
    await seed(store, [made[3], made[1]], T0)
    listed = await store.list_followups(user_id=None, status=None, trigger_type=None, limit=10)
    assert [v.id for v in listed] == [*sorted([ids[1], ids[3]]), ids[0], ids[2]]
    assert [v.id for v in listed] == [
        v.id
        for v in await store.list_followups(user_id=None, status=None, trigger_type=None, limit=10)
    ]
    assert listed[0].trigger_data == {"custom_message": "message 2"}
    assert (listed[0].retry_count, listed[0].template_id, listed[0].executed_at) == (0, None, None)
    by_u1 = await store.list_followups(
        user_id="u1", status=Status.PENDING, trigger_type=TriggerType.CUSTOM, limit=1
    )
    assert [v.id for v in by_u1] == [ids[1]]
    none = await store.list_followups(
        user_id="u1", status=None, trigger_type=TriggerType.POST_EVENT, limit=10
    )
    assert none == []

    [claimed] = await store.claim_due("a", T0, LEASE, 10)
    assert claimed.followup.id == ids[0]
    assert await store.cancel_followup("nope", T0) is CancelResult.NOT_FOUND
    assert await store.cancel_followup(ids[0], T0 + S) is CancelResult.NOT_PENDING  # being sent
    assert await store.cancel_followup(ids[0], T0 + LEASE + S) is CancelResult.CANCELLED
    assert await store.cancel_followup(ids[0], T0 + LEASE + S) is CancelResult.NOT_PENDING
    cancelled = await view_of(store, ids[0])
    assert (cancelled.status, cancelled.cancelled_at) == ("cancelled", T0 + LEASE + S)

    await store.claim_due("a", T0 + 60 * S, LEASE, 10)
    await store.mark_executed("a", [Executed(ids[1], "t", "m")], T0 + 60 * S)
    await store.mark_executed("a", [Executed(ids[2], "t", "m")], T0 - timedelta(days=1))
    assert await store.figures(T0) == Figures(pending_jobs=1, executed_today=1)
