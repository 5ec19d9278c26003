"""Completion events on an EventBridge bus (the default bus unless EVENT_BUS_NAME says otherwise)."""

from __future__ import annotations

from typing import Any

import orjson

EVENT_SOURCE = "bulkio"


class EventDeliveryFailed(RuntimeError):
    """EventBridge took the request but not the event (PutEvents reports failures per entry, not as errors)."""


class EventBridgePublisher:
    def __init__(self, client: Any, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        answer = self._client.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": detail_type,
                    "Detail": orjson.dumps(detail).decode(),
                    "EventBusName": self._bus_name,
                }
            ]
        )
        if answer.get("FailedEntryCount"):
            entry = answer["Entries"][0]
            raise EventDeliveryFailed(f"{entry.get('ErrorCode')}: {entry.get('ErrorMessage')}")
