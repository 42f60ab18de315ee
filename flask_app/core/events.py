"""Signals of the execution core (blinker). Observers (comparison, metrics) connect here."""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent once per arrival of a path at the execution core, after it finished, whatever happened.
#: sender: the path name (a registered flask_app.paths name); kwargs: attempt=Attempt, app=the
#: Flask app whose executor ran it (observers run in worker threads, outside any app context).
#: The one signal comparison and metrics listen to, for every path.
attempt_finished = _signals.signal("attempt-finished")

#: Sent after a prebooking was created and committed. sender: the Flask app;
#: kwargs: prebooking=Prebooking, session=Session. The QStash path publishes from here.
prebooking_created = _signals.signal("prebooking-created")

#: Sent after a prebooking was cancelled and committed (same sender and kwargs).
prebooking_cancelled = _signals.signal("prebooking-cancelled")

#: Sent after the pre-flight found stored sessions dead and marked their prebookings
#: session_expired (committed). sender: the Flask app; kwargs: prebooking_ids=list[str],
#: now=datetime. Notifications (flask_app/notify.py) tell the users from here.
sessions_expired = _signals.signal("sessions-expired")
