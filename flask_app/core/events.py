"""Signals of the execution core (blinker). Observers (comparison, metrics) connect here."""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent once per arrival of a path at the execution core, after it finished, whatever happened.
#: sender: the path name (a registered flask_app.paths name); kwargs: attempt=Attempt, app=the
#: Flask app whose executor ran it (observers run in worker threads, outside any app context).
#: The one signal comparison and metrics listen to, for every path.
attempt_finished = _signals.signal("attempt-finished")

#: Sent inside the transaction that creates or cancels a prebooking, before its commit.
#: sender: the Flask app; kwargs: prebooking=Prebooking, session=Session, change="created" |
#: "cancelled". Receivers add what the change owes to `session` (the QStash outbox) and never
#: commit: the change and what it owes are written together or not at all.
prebooking_saving = _signals.signal("prebooking-saving")

#: Sent after a prebooking was created and committed. sender: the Flask app;
#: kwargs: prebooking=Prebooking, session=Session. The QStash outbox tries its call from here.
prebooking_created = _signals.signal("prebooking-created")

#: Sent after a prebooking was cancelled and committed (same sender and kwargs).
prebooking_cancelled = _signals.signal("prebooking-cancelled")

#: Sent inside the transaction in which the pre-flight marks prebookings session_expired (their
#: stored session is dead), before its commit. sender: the Flask app; kwargs:
#: prebooking_ids=list[str], session=Session, now=datetime. Receivers add to `session` and never
#: commit (flask_app/notify.py owes the users' events here).
sessions_expired = _signals.signal("sessions-expired")
