"""The servicers' Timestamp conversion agrees with protobuf's own, to the nanosecond."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from onboarding.entrypoints.grpc.convert import timestamp

ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=3)), timezone(timedelta(hours=-11, minutes=-30))]
)


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.one_of(st.none(), ZONES),
)
def test_timestamp_is_protobufs(moment: datetime, zone: timezone | None) -> None:
    if zone is not None:
        moment = moment.replace(tzinfo=zone)
    expected = Timestamp()
    expected.FromDatetime(moment)
    assert timestamp(moment) == expected


def test_no_instant_is_no_timestamp() -> None:
    assert timestamp(None) is None
