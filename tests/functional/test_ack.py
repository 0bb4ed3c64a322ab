"""Splunk indexer acknowledgement through the real handler: channels, ackIds, the ack query (SPEC §3)."""

from __future__ import annotations

import json

import pytest

from tests.functional.conftest import HEC_TOKEN
from tests.functional.test_ingest import CISCO, SSHD, SSHD_EVENT, stored_docs
from tests.functional.test_lambda import function_module, http_api_event

ACK_TOKEN = "aaaaaaaa-2222-4333-8444-555555555555"
CHANNEL = "FE0ECFAD-13D5-401B-847D-77833BD77131"
OTHER_CHANNEL = "7c6b5a49-3827-4160-9f8e-7d6c5b4a3928"
VPC_SOURCETYPE = "aws:cloudwatchlogs:vpcflow"
FLOWS = [
    "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 "
    "1418530070 ACCEPT OK",
    "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 "
    "1418530070 REJECT OK",
    "2 123456789010 eni-1235b8ca123456789 10.0.0.7 10.0.0.9 443 50122 6 12 9000 1418530080 "
    "1418530140 ACCEPT OK",
]
TOKENS = [
    {"name": "test", "token": HEC_TOKEN},
    {"name": "firehose", "token": ACK_TOKEN, "ack": True, "default_sourcetype": VPC_SOURCETYPE},
]


@pytest.fixture
def client(make_client):
    return make_client(hec={"tokens": TOKENS})


def send(client, body: str | bytes = SSHD_EVENT, path: str = "/services/collector/event",
         channel: str | None = CHANNEL, token: str = ACK_TOKEN, **kw):
    headers = dict(kw.pop("headers", {}))
    if channel is not None:
        headers["X-Splunk-Request-Channel"] = channel
    return client.hec(body, path, token=token, headers=headers, **kw)


def ack_query(client, acks, path: str = "/services/collector/ack", channel: str | None = CHANNEL,
              token: str | None = ACK_TOKEN, **kw):
    body = acks if isinstance(acks, bytes) else json.dumps({"acks": acks})
    return send(client, body, path, channel=channel, token=token, **kw)


def answer(response) -> tuple[int, dict]:
    return response.status_code, response.json()


# -- the examples: the ack endpoint existed for nobody -------------------------------------------


def test_the_ack_endpoint_answers_true_for_the_ids_a_token_with_ack_got(client):
    ids = [send(client).json()["ackId"] for _ in range(2)]

    assert answer(ack_query(client, ids)) == (200, {"acks": {"0": True, "1": True}})


def test_the_ack_endpoint_of_a_token_without_ack_is_code_14_not_a_404(client):
    assert answer(ack_query(client, [0], token=HEC_TOKEN)) == (400, {"text": "ACK is disabled", "code": 14})
    # The channel does not matter then: acknowledgement is off for this token.
    assert ack_query(client, [0], token=HEC_TOKEN, channel=None).json()["code"] == 14


def test_the_versioned_ack_path_answers_too(client):
    assert answer(ack_query(client, [3], path="/services/collector/ack/1.0")) == (200, {"acks": {"3": True}})


def test_the_ack_query_through_lambda_reaches_the_ingest_function(client):
    handler = function_module("ingest_event").handler
    headers = {"Authorization": f"Splunk {ACK_TOKEN}", "X-Splunk-Request-Channel": CHANNEL}

    answer = handler(http_api_event("POST", "/services/collector/ack", b'{"acks": [5]}', headers), None)

    assert answer["statusCode"] == 200
    assert json.loads(answer["body"]) == {"acks": {"5": True}}


# -- ingest with ack on -----------------------------------------------------------------------


def test_with_ack_on_a_request_without_a_channel_is_code_10_and_stores_nothing(client):
    assert answer(send(client, channel=None)) == (400, {
        "text": "Data channel is missing", "code": 10,
        "detail": "send X-Splunk-Request-Channel: <GUID> or ?channel=<GUID>"})
    assert answer(send(client, SSHD, "/services/collector/raw", channel=None))[1]["code"] == 10
    assert stored_docs(client) == [] and client.dlq_records() == []


@pytest.mark.parametrize("channel", ["firehose-1", CHANNEL.replace("-", ""), "{" + CHANNEL + "}"])
def test_with_ack_on_a_channel_that_is_not_a_guid_is_code_11_and_stores_nothing(client, channel):
    status, body = answer(send(client, channel=channel))
    assert (status, body["text"], body["code"]) == (400, "Invalid data channel", 11)
    assert answer(send(client, CISCO, channel=channel))[1]["code"] == 11
    assert stored_docs(client) == [] and client.dlq_records() == []


def test_the_channel_is_checked_before_the_body_is_looked_at(client):
    # A body that is malformed, or over the limit, would be 400 code 6 or 413: the channel comes first.
    assert send(client, "{not json", channel=None).json()["code"] == 10
    too_big = "x" * (client.service.settings.hec.max_body_bytes + 1)
    assert answer(send(client, too_big, channel=None))[0] == 400
    assert send(client, too_big, channel="nope").json()["code"] == 11


def test_ack_ids_increase_per_channel_across_every_ingest_endpoint(client):
    paths = ["/services/collector", "/services/collector/event", "/services/collector/event/1.0"]
    got = [send(client, path=path).json() for path in paths]
    got += [send(client, SSHD, path, params={"sourcetype": "linux_secure"}).json()
            for path in ("/services/collector/raw", "/services/collector/raw/1.0")]

    assert got == [{"text": "Success", "code": 0, "ackId": n} for n in range(5)]
    assert len(stored_docs(client)) == 5


def test_different_channels_count_independently_and_the_query_parameter_names_one(client):
    assert send(client).json()["ackId"] == 0
    assert send(client).json()["ackId"] == 1
    assert send(client, channel=None, params={"channel": OTHER_CHANNEL}).json()["ackId"] == 0
    assert send(client, channel=OTHER_CHANNEL).json()["ackId"] == 1
    # The same GUID in another case is the same channel.
    assert send(client, channel=CHANNEL.lower()).json()["ackId"] == 2


def test_a_refused_request_gets_no_ack_id_and_uses_none_up(client):
    assert send(client).json()["ackId"] == 0
    refused = send(client, '{"event": "a"}{"no_event": 1}')
    assert refused.status_code == 400 and "ackId" not in refused.json()
    assert send(client).json()["ackId"] == 1


def test_a_dead_lettered_success_carries_its_ack_id(client):
    send(client)
    assert answer(send(client, CISCO)) == (200, {"text": "Success", "code": 0, "ackId": 1, "accepted": 1,
                                                 "dead_lettered": 1})
    assert len(client.dlq_records()) == 1


def test_a_503_gets_no_ack_id(make_client):
    client = make_client(hec={"tokens": TOKENS}, dlq={"enabled": False})
    refused = send(client, CISCO)

    assert answer(refused) == (503, {"text": "Server is busy", "code": 9,
                                     "detail": "the DLQ is disabled (dlq.enabled: false)"})
    assert send(client).json()["ackId"] == 0


def test_a_raw_request_with_ack_on_stores_every_line_and_gets_one_ack_id(client):
    body = "\n".join(FLOWS) + "\n"
    assert answer(send(client, body, "/services/collector/raw")) == (200, {"text": "Success", "code": 0,
                                                                           "ackId": 0})
    docs = stored_docs(client)
    assert sorted(d["_source"]["src_endpoint"]["port"] for d in docs) == [443, 20641, 49761]


def test_with_ack_off_the_channel_is_neither_needed_nor_checked_and_no_ack_id_comes_back(client):
    for channel in (None, "not-a-guid", CHANNEL):
        assert answer(send(client, token=HEC_TOKEN, channel=channel)) == (200, {"text": "Success", "code": 0})


# -- the ack query ------------------------------------------------------------------------------


@pytest.mark.parametrize("token, code, status", [(None, 2, 401), ("not-a-token", 4, 403)])
def test_the_ack_query_needs_a_token_like_ingest(client, token, code, status):
    response = ack_query(client, [0], token=token)
    assert (response.status_code, response.json()["code"]) == (status, code)


def test_the_ack_query_takes_the_token_from_the_query_string_only_where_allowed(make_client):
    tokens = [{**TOKENS[1], "allow_query_string": True}]
    client = make_client(hec={"tokens": tokens})
    response = client.hec(json.dumps({"acks": [0]}), "/services/collector/ack", token=None,
                          params={"token": ACK_TOKEN, "channel": CHANNEL})
    assert answer(response) == (200, {"acks": {"0": True}})


def test_the_ack_query_needs_a_valid_channel(client):
    assert answer(ack_query(client, [0], channel=None))[1]["code"] == 10
    assert answer(ack_query(client, [0], channel="firehose"))[1]["code"] == 11
    assert answer(ack_query(client, [0], channel=None, params={"channel": CHANNEL}))[0] == 200


@pytest.mark.parametrize("body", [b"", b"{", b'{"acks": "0"}', b'{"acks": [-1]}', b'{"acks": [0.5]}',
                                  b'[0, 1]', b'{"ids": [0]}'])
def test_a_malformed_ack_query_is_a_hec_shaped_code_6(client, body):
    status, got = answer(ack_query(client, body))
    assert (status, got["text"], got["code"]) == (400, "Invalid data format", 6)


def test_a_gzipped_ack_query_is_read_like_a_gzipped_ingest_body(client):
    assert answer(ack_query(client, [0, 4], gzipped=True)) == (200, {"acks": {"0": True, "4": True}})


def test_the_ack_query_answers_only_post(client):
    response = client.hec(b"", "/services/collector/ack", method="GET",
                          headers={"X-Splunk-Request-Channel": CHANNEL})
    assert (response.status_code, response.json()["code"]) == (405, 6)


def test_an_ack_query_stores_nothing_and_counts_no_request_as_rejected(client):
    ack_query(client, [0, 1, 2])
    assert stored_docs(client) == [] and client.dlq_records() == []
    assert client.service.healthz()["requests_rejected"] == 0


# -- Amazon Kinesis Data Firehose, as it talks to a Splunk HEC destination ------------------------


def firehose_headers() -> dict[str, str]:
    """Headers of a Firehose delivery besides `Authorization: Splunk <token>`: its data channel."""
    return {"X-Splunk-Request-Channel": CHANNEL, "Content-Type": "application/json"}


def cloudwatch_record(flow: str) -> bytes:
    """One record as Splunk's CloudWatch Logs processor (the Firehose transform) writes it."""
    return json.dumps({
        "time": int(flow.split()[10]), "host": "arn:aws:logs:us-east-1:123456789010",
        "source": "vpc-flow-logs:eni-1235b8ca123456789", "sourcetype": VPC_SOURCETYPE, "event": flow,
    }).encode()


def test_firehose_event_endpoint_probe_deliveries_and_ack_polling(client):
    # Firehose also opens requests with a channel and no body, to check the endpoint; Splunk answers
    # them 400 code 5, and a 5xx would count as a failing destination.
    probe = client.hec(b"", "/services/collector/event", token=ACK_TOKEN, headers=firehose_headers())
    assert answer(probe) == (400, {"text": "No data", "code": 5})

    # Records are concatenated as they are, without a separator, one batch per request.
    first = client.hec(b"".join(cloudwatch_record(f) for f in FLOWS[:2]), "/services/collector/event",
                       token=ACK_TOKEN, headers=firehose_headers())
    second = client.hec(cloudwatch_record(FLOWS[2]), "/services/collector/event",
                        token=ACK_TOKEN, headers=firehose_headers())
    assert answer(first) == (200, {"text": "Success", "code": 0, "ackId": 0})
    assert answer(second) == (200, {"text": "Success", "code": 0, "ackId": 1})

    # Then it polls the ack endpoint on the same channel with every id still waiting.
    poll = client.hec(b'{"acks":[0,1]}', "/services/collector/ack", token=ACK_TOKEN,
                      headers=firehose_headers())
    assert answer(poll) == (200, {"acks": {"0": True, "1": True}})

    docs = stored_docs(client)
    assert len(docs) == 3
    assert {d["_source"]["class_uid"] for d in docs} == {4001}
    assert client.dlq_records() == []


def test_firehose_raw_endpoint_deliveries_and_ack_polling(client):
    # The raw endpoint type: the records' bytes concatenated; each record ends with its own newline.
    body = b"".join(f.encode() + b"\n" for f in FLOWS)
    delivered = client.hec(body, "/services/collector/raw", token=ACK_TOKEN, headers=firehose_headers())
    assert answer(delivered) == (200, {"text": "Success", "code": 0, "ackId": 0})

    poll = client.hec(b'{"acks":[0]}', "/services/collector/ack", token=ACK_TOKEN, headers=firehose_headers())
    assert answer(poll) == (200, {"acks": {"0": True}})
    assert len(stored_docs(client)) == 3
