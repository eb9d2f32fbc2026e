"""Stream positions as Last-Event-ID values: written and read back, bad ones refused."""

from __future__ import annotations

import pytest

from storage.alert_stream import StreamPosition


def test_a_position_reads_back_what_it_wrote() -> None:
    position = StreamPosition(41, 7731, (7731, 7740))
    parsed = StreamPosition.parse(position.event_id())
    assert parsed == StreamPosition(41, 7731)  # a reconnect knows the horizon, not the set
    assert StreamPosition.parse("41") == StreamPosition(41)  # the earlier streams' ids
    assert StreamPosition(41).event_id() == "41"


@pytest.mark.parametrize("text", ["", "x", "41.", ".7", "-1", "41.7.2", "4 1", "41.x"])
def test_an_id_the_stream_never_sent_is_refused(text: str) -> None:
    assert StreamPosition.parse(text) is None
