"""dlq.max_age and dlq.full_policy as settings (SPEC §9): the forms a duration takes, defaults,
environment overrides, and errors that name the key."""

from __future__ import annotations

from datetime import timedelta

import pytest

from telhawk_ingest.config import load_settings
from telhawk_ingest.errors import ConfigError


def test_both_are_off_by_default():
    dlq = load_settings(env={}).dlq
    assert (dlq.max_age, dlq.full_policy) == (None, "refuse")


@pytest.mark.parametrize(("given", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400),
                                                ("45s", 45), ("2w", 14 * 86400), ("3600", 3600),
                                                ("P7D", 7 * 86400), ("1.5h", 5400)])
def test_max_age_takes_units_seconds_and_iso_8601(given, seconds):
    settings = load_settings(env={"INGEST_DLQ_MAX_AGE": given, "INGEST_DLQ_FULL_POLICY": "drop_oldest"})
    assert settings.dlq.max_age == timedelta(seconds=seconds)
    assert settings.dlq.full_policy == "drop_oldest"


@pytest.mark.parametrize("given", ["0", "0d", "-5", "-1h", "soon", "P0D"])
def test_a_max_age_that_is_not_a_positive_duration_fails_naming_the_key(given):
    with pytest.raises(ConfigError, match=r"dlq\.max_age \(from INGEST_DLQ_MAX_AGE\)"):
        load_settings(env={"INGEST_DLQ_MAX_AGE": given})


def test_an_unknown_full_policy_fails_naming_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"dlq\.full_policy.*'refuse' or 'drop_oldest'"):
        load_settings(env={"INGEST_DLQ_FULL_POLICY": "drop_newest"})
