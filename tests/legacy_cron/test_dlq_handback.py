"""While cron runs, a prebooking whose QStash deliveries died in the DLQ is handed back to it."""

from datetime import UTC, datetime, timedelta

import pytest

from flask_app.qstash import dlq, relay
from tests.e2e.conftest import live_app, qstash_server, sandbox  # noqa: F401 (fixtures)
from tests.e2e.test_qstash_path import AUTH, create, sdk
from tests.factories import make_prebooking, reload
from tests.fake_gateway import FakeGateway
from tests.test_delivery import dead


@pytest.fixture
def qstash_keys():
    # qstash_dev signs with keys the app does not know: every delivery gets 401.
    return {"current_signing_key": "sig_" + "a" * 28, "next_signing_key": "sig_" + "b" * 28}


def test_rejected_deliveries_die_in_the_dlq_and_reconcile_hands_them_to_cron(
    live_app,  # noqa: F811
    qstash_server,  # noqa: F811
):
    client = live_app.test_client()
    opens = datetime.now(UTC) + timedelta(seconds=30)
    live_app.config["QSTASH_LEAD_SECONDS"] = 30.0  # due now
    created = create(client, opens)
    assert qstash_server.wait_idle(timeout=15)
    dlq = sdk(qstash_server).dlq.list().messages
    assert [m.response_status for m in dlq] == [401]
    result = live_app.test_cli_runner().invoke(args=["qstash", "reconcile-dlq"])
    assert result.exit_code == 0 and '"handed_to_cron": 1' in result.output
    assert sdk(qstash_server).dlq.list().messages == []
    row = client.get(f"/api/prebookings/{created['id']}", headers=AUTH).json
    assert (row["status"], row["qstash_message_id"]) == ("pending", None)


class TestWithAFakeGateway:
    @pytest.fixture
    def gateway(self):
        return FakeGateway()

    @pytest.fixture
    def app_overrides(self, gateway):
        return {"QSTASH_GATEWAY": gateway, "QSTASH_ENABLED": True}

    def test_reconcile_dlq_hands_a_prebooking_still_in_time_back_to_cron(
        self, app, session, gateway
    ):
        now = datetime.now(UTC)
        row = make_prebooking(
            session, available_at=now + timedelta(minutes=1), qstash_message_id="m1"
        )
        gateway.dlq.append(dead(row, 503, "database unavailable"))
        with app.app_context():
            report = dlq.reconcile_dlq(session, now)
            assert relay.relay(session, now).published == 0  # not re-published
        assert report.outcomes == {"handed_to_cron": 1} and report.deleted == 1
        row = reload(session, row.id)
        assert (row.status, row.qstash_message_id) == ("pending", None)
        assert (
            row.qstash_error
            == "dlq: QStash gave up delivering (last answer 503: database unavailable)"
        )
        assert gateway.dlq == []
