"""Many threads in several processes race for the same prebookings: each is booked once."""

import multiprocessing
from collections import Counter

import pytest
from sqlalchemy import select

from flask_app.models import Prebooking
from tests.factories import booking_data, make_prebooking, store_session
from tests.race_worker import race

PROCESSES = 4
THREADS = 6
ROWS = 60


@pytest.mark.slow
def test_racing_processes_and_threads_book_each_prebooking_exactly_once(app, db_url, fernet_key):
    with app.extensions["db"].session() as session:
        store_session(app, session)
        ids = []
        for _ in range(ROWS):
            row = make_prebooking(session)
            row.booking_data = booking_data(class_id=row.id.replace("-", "_"))
            session.commit()
            ids.append(row.id)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        per_process = pool.starmap(
            race, [(db_url, fernet_key, ids, THREADS, seed) for seed in range(PROCESSES)]
        )
    booked = Counter(class_id for done in per_process for class_id in done)
    assert sorted(booked) == sorted(i.replace("-", "_") for i in ids)
    assert set(booked.values()) == {1}, (
        f"double bookings: {[k for k, v in booked.items() if v > 1]}"
    )
    with app.extensions["db"].session() as session:
        rows = session.scalars(select(Prebooking)).all()
        assert {r.status for r in rows} == {"completed"}
        assert {r.claim_count for r in rows} == {1}
