"""Signature checks, including QStash's clock running slightly ahead of ours."""

import time

import pytest

from flask_app.config import DEV_QSTASH_CURRENT_SIGNING_KEY as CURRENT
from flask_app.config import DEV_QSTASH_NEXT_SIGNING_KEY as NEXT
from flask_app.qstash.signature import InvalidSignature, verify
from qstash_dev.signing import sign

URL = "https://prebook.example.com/api/qstash/prebooking-execute"
BODY = b'{"prebookingId": "x"}'


def check(token, body=BODY, url=URL):
    verify(body, token, url, current_key=CURRENT, next_key=NEXT)


@pytest.mark.parametrize("ahead_s", [0, 1, 2, 4])
def test_qstash_clock_a_few_seconds_ahead_is_tolerated(ahead_s):
    check(sign(CURRENT, URL, BODY, now_s=time.time() + ahead_s))
    check(sign(NEXT, URL, BODY, now_s=time.time() + ahead_s))


def test_qstash_clock_far_ahead_is_refused():
    with pytest.raises(InvalidSignature):
        check(sign(CURRENT, URL, BODY, now_s=time.time() + 60))


@pytest.mark.parametrize(
    ("token_args", "body", "url"),
    [
        (("sig_" + "x" * 28, URL, BODY), BODY, URL),  # forged key
        ((CURRENT, URL, BODY), BODY + b" ", URL),  # tampered body
        ((CURRENT, URL + "/other", BODY), BODY, URL),  # another URL
        ((CURRENT, URL, BODY), BODY, URL + "/"),  # the same URL with a trailing slash
    ],
)
def test_skewed_tokens_still_need_key_body_and_url(token_args, body, url):
    token = sign(*token_args, now_s=time.time() + 2)
    with pytest.raises(InvalidSignature):
        check(token, body, url)


def test_token_expired_beyond_the_tolerance_is_refused():
    with pytest.raises(InvalidSignature):
        check(sign(CURRENT, URL, BODY, now_s=time.time() - 310))
