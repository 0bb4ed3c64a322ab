"""The storage day of an event: its own time inside the window around arrival, else arrival (SPEC §3)."""

from __future__ import annotations

import pytest

from telhawk_ingest.config import load_settings
from telhawk_ingest.envelope import id_time, new_id
from telhawk_ingest.errors import ConfigError
from telhawk_ingest.storage import base
from telhawk_ingest.storage.base import day_anchor, seconds

DAY = 86_400
ARRIVAL = 1_767_323_045.0  # 2026-01-02T03:04:05Z
LAST = 253_402_300_799     # 9999-12-31T23:59:59Z


@pytest.mark.parametrize(("event_time", "anchor"), [
    (ARRIVAL - 7 * DAY, ARRIVAL - 7 * DAY),          # the window's edges belong to it
    (ARRIVAL + 1 * DAY, ARRIVAL + 1 * DAY),
    (ARRIVAL - 7 * DAY - 0.001, ARRIVAL),
    (ARRIVAL + 1 * DAY + 0.001, ARRIVAL),
    (ARRIVAL, ARRIVAL),
    (None, ARRIVAL),
])
def test_event_time_is_the_anchor_only_inside_the_window(event_time, anchor):
    assert day_anchor(event_time, ARRIVAL, 7, 1) == anchor


def test_a_zero_window_anchors_every_event_on_arrival_but_its_exact_arrival_time():
    assert day_anchor(ARRIVAL - 1, ARRIVAL, 0, 0) == ARRIVAL
    assert day_anchor(ARRIVAL + 1, ARRIVAL, 0, 0) == ARRIVAL


@pytest.mark.parametrize(("event_time", "arrival", "anchor"), [
    (None, 2.0**48 / 1000, LAST),                    # the last UUIDv7 millisecond is in year 10889
    (LAST + DAY / 2, LAST, LAST),
    (-DAY / 2, 0.0, 0.0),
    (0.0, 0.0, 0.0),                                 # the first and the last second are in
    (0.5, 0.5, 0.5),
    (LAST, LAST, LAST),
])
def test_the_anchor_stays_within_the_days_a_date_can_name(event_time, arrival, anchor):
    assert day_anchor(event_time, arrival, 7, 1) == anchor


@pytest.mark.parametrize(("value", "per_second", "expected"), [
    (1_700_000_000, 1, 1_700_000_000.0),
    (1_700_000_000_500, 1000, 1_700_000_000.5),
    (-0.0, 1, -0.0),
    (1e300, 1, 1e300),
    (10**400, 1, None),                              # too large for a float
    (True, 1, None),
    ("1700000000", 1, None),
    (None, 1, None),
    (float("inf"), 1, None),
    (float("nan"), 1, None),
    ([1], 1, None),
])
def test_only_finite_json_numbers_count_as_times(value, per_second, expected):
    assert seconds(value, per_second) == expected


def test_a_number_is_read_as_seconds_unless_told_otherwise():
    assert seconds(1_700_000_000) == 1_700_000_000.0
    assert seconds(1_700_000_000.5) == 1_700_000_000.5


def test_a_uuid7_id_gives_its_millisecond_time_and_other_ids_none():
    assert id_time(new_id(now_ns=1_767_323_045_123_456_789)) == 1_767_323_045.123
    assert id_time("00000000-0000-7000-8000-000000000000") == 0.0
    assert id_time("FFFFFFFF-FFFF-7FFF-BFFF-FFFFFFFFFFFF") == (2**48 - 1) / 1000
    for other in ("00000000-0000-4000-8000-000000000000",   # version 4
                  "00000000-0000-7000-c000-000000000000",   # not the RFC variant
                  "0000000g-0000-7000-8000-000000000000",
                  "000000000000-7000-8000-0000000000000000",
                  "not-an-id", ""):
        assert id_time(other) is None


@pytest.mark.parametrize(("item_id", "day_time"), [
    ("0189c3a1-1c2b-7def-8000-000000000000", 1_691_204_262.955),
    ("e677d21f-dbff-7000-8000-000000000000", LAST + 0.999),  # the last millisecond of 9999-12-31
    ("e677d21f-dc00-7000-8000-000000000000", 0.0),           # 10000-01-01: no UTC date names it
    ("FFFFFFFF-FFFF-7FFF-BFFF-FFFFFFFFFFFF", 0.0),
    ("00000000-0000-4000-8000-000000000000", 0.0),           # not a UUIDv7
    (None, 0.0),                                             # not even a string (items built in code)
    (1_691_204_262, 0.0),
])
def test_the_storage_time_of_an_id_is_its_uuid7_time_while_a_date_names_it_else_0(item_id, day_time):
    assert base.id_time(item_id) == day_time



@pytest.mark.parametrize(("event_time", "day_time"), [
    (base.MAX_DAY_TIME - 0.001, base.MAX_DAY_TIME - 0.001),  # 9999-12-31T23:59:59.999Z: its own time
    (base.MAX_DAY_TIME, 1_691_204_262.955),                  # 10000-01-01: the time in the id
    (base.MIN_DAY_TIME, base.MIN_DAY_TIME),                  # 0001-01-01T00:00:00Z
    (base.MIN_DAY_TIME - 0.001, 1_691_204_262.955),
])
def test_an_item_time_picks_its_storage_day_only_while_a_date_names_it(event_time, day_time):
    item = base.Item(id="0189c3a1-1c2b-7def-8000-000000000000", index="main", time=event_time, document={})
    assert base.storage_time(item) == day_time


def test_the_day_window_defaults_to_7_days_back_and_1_ahead_and_can_be_set(tmp_path):
    assert load_settings(env={}).storage.day_window.model_dump() == {"back_days": 7, "ahead_days": 1,
                                                                     "replay_back_days": 30}
    config = tmp_path / "c.yaml"
    config.write_text("storage:\n  day_window: {back_days: 30, ahead_days: 0}\n")
    assert load_settings(config, env={}).storage.day_window.back_days == 30
    from_env = load_settings(env={"INGEST_STORAGE_DAY_WINDOW": "{back_days: 2, ahead_days: 3}"})
    assert from_env.storage.day_window.model_dump() == {"back_days": 2, "ahead_days": 3,
                                                        "replay_back_days": 30}


@pytest.mark.parametrize(("window", "names"), [
    ("{back_days: -1}", "storage.day_window.back_days"),
    ("{ahead_days: 1.5}", "storage.day_window.ahead_days"),
    ("{back_days: 36501}", "storage.day_window.back_days"),
    ("{days: 7}", "storage.day_window.days"),
    ("7", "storage.day_window"),
])
def test_a_bad_day_window_stops_start_up_naming_the_key(window, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")) as caught:
        load_settings(env={"INGEST_STORAGE_DAY_WINDOW": window})
    assert "INGEST_STORAGE_DAY_WINDOW" in str(caught.value)


def test_a_day_window_that_is_not_yaml_stops_start_up_naming_the_variable():
    with pytest.raises(ConfigError, match="INGEST_STORAGE_DAY_WINDOW: expected a YAML mapping"):
        load_settings(env={"INGEST_STORAGE_DAY_WINDOW": "{back_days: ["})
