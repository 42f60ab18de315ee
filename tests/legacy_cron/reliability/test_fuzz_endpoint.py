"""Scenario: the fuzzed cron endpoint (methods, queries, tokens) never answers a 5xx."""

from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import CRON_SECRET
from tests.reliability.stack import CRON_URL
from tests.reliability.test_fuzz_deliveries import SETTINGS


@SETTINGS
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    query=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
    raw=st.binary(max_size=100),
    token=st.sampled_from([CRON_SECRET, "", "wrong"])
    | st.from_regex(r"[ -~]{0,20}", fullmatch=True),
    slash=st.booleans(),
)
def test_cron_endpoint_never_answers_5xx(client, method, query, raw, token, slash):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = CRON_URL + ("/" if slash else "")
    resp = client.open(url, method=method, query_string=query, data=raw, headers=headers)
    assert resp.status_code < 500, resp.get_data(as_text=True)[:300]
    if method in ("GET", "POST") and token == CRON_SECRET:
        assert resp.status_code == 200 and resp.json["ran"] is True
