"""Documents no storage try could encode: a permanent outcome naming the member, never an exception."""

from __future__ import annotations

import pytest

from telhawk_ingest.config import INDEX_RULE
from telhawk_ingest.envelope import new_id
from telhawk_ingest.storage.base import Item, Status, encode_document, index_of
from telhawk_ingest.storage.local import LocalBackend


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_an_encodable_document_is_its_json():
    assert encode_document({"a": 1}) == b'{"a":1}'
    assert encode_document({"a": 1}, {"_id": "x"}) == b'{"_id":"x","_source":{"a":1}}'


@pytest.mark.parametrize(("document", "wrap", "member", "error"), [
    ({"ok": 1, "unmapped": {"x": nested(260)}}, None, "unmapped", "Recursion limit reached"),
    ({"ok": 1, "deep": nested(253)}, {"_id": "x"}, "deep", "Recursion limit reached"),
    ({"ok": 1, "count": 2**70}, None, "count", "Integer exceeds 64-bit range"),
    ({"ok": 1, "keys": {1: "a"}}, None, "keys", "Dict key must be str"),
    ({"ok": 1, 7: "a"}, None, "7", "Dict key must be str"),            # a member whose name is no string
    # Only the wrapper costs a level: unwrapped, a member at the limit is fine and the later one is named.
    ({"deep": nested(253), "count": 2**70}, None, "count", "Integer exceeds 64-bit range"),
])
def test_a_document_that_cannot_be_encoded_is_permanent_and_names_the_member(document, wrap, member, error):
    outcome = encode_document(document, wrap)

    assert not isinstance(outcome, bytes)
    assert outcome.status is Status.PERMANENT
    assert outcome.error == f"event cannot be encoded as JSON: {member}: {error}"
    assert outcome.details == {"error_type": "json_encode_error", "field": member}


def test_a_long_member_name_is_cut_to_80_characters_in_the_error_but_not_in_the_details():
    name = "k" * 100
    outcome = encode_document({name: 2**70})

    assert not isinstance(outcome, bytes)
    assert outcome.error == f"event cannot be encoded as JSON: {'k' * 80}: Integer exceeds 64-bit range"
    assert outcome.details == {"error_type": "json_encode_error", "field": name}


def test_a_wrapper_that_cannot_be_encoded_names_no_member():
    outcome = encode_document({"a": 1}, {"_id": "\ud800"})  # a lone surrogate: not UTF-8

    assert not isinstance(outcome, bytes)
    assert outcome.status is Status.PERMANENT
    assert outcome.error == "event cannot be encoded as JSON: str is not valid UTF-8: surrogates not allowed"
    assert outcome.details == {"error_type": "json_encode_error"}


def test_the_wrapper_costs_one_level():
    assert isinstance(encode_document({"deep": nested(253)}), bytes)
    assert not isinstance(encode_document({"deep": nested(253)}, {"_id": "x"}), bytes)


def test_the_local_store_dead_letters_only_the_document_it_cannot_encode(tmp_path):
    backend = LocalBackend(tmp_path)
    items = [Item(new_id(), "main", 1_767_323_045.0, {"n": n}) for n in range(3)]
    items[1].document["unmapped"] = nested(300)

    outcomes = backend.store(items)

    assert [o.status for o in outcomes] == [Status.STORED, Status.PERMANENT, Status.STORED]
    assert outcomes[1].details["field"] == "unmapped"
    assert sorted(d["_source"]["n"] for d in backend.documents()) == [0, 2]
    backend.close()



@pytest.mark.parametrize(("index", "shown"), [
    ("a b", "'a b'"),
    ("x" * 150, repr("x" * 100)),   # a long name is shown cut to 100 characters
    (7, "'int'"),                   # not text at all (items built in code): its type
    (["main"], "'list'"),
])
def test_an_index_that_is_no_index_name_is_refused_for_good_saying_what_it_was(index, shown):
    outcome = index_of(Item(id=new_id(), index=index, time=None, document={}))

    assert not isinstance(outcome, str)
    assert outcome.status is Status.PERMANENT
    assert outcome.error == f"index {shown} is not an index name ({INDEX_RULE})"
    assert outcome.details == {"field": "index"}
