"""The few staff API calls the fleet simulator needs: log in, create monitors and enrollment
codes, revoke a device, and read back reports and conflicts to check the run."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from sync.client.transport import NotFound, problem_from_response

__all__ = ["StaffClient"]


class StaffClient:
    """A logged-in staff member (org_admin or case_manager) over plain JSON."""

    def __init__(self, base_url: str, http: httpx.AsyncClient | None = None) -> None:
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=60.0)
        self._base = base_url.rstrip("/")
        self._token: str | None = None

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        response = await self._http.request(
            method, self._base + path, json=json, params=params, headers=headers
        )
        if not response.is_success:
            raise problem_from_response(response)
        return response.json() if response.content else None

    async def login(self, email: str, password: str) -> None:
        answer = await self._call(
            "POST", "/v1/auth/login", json={"email": email, "password": password}
        )
        self._token = str(answer["token"])

    async def create_monitor(
        self, display_name: str, region_cells: list[str], region_countries: list[str]
    ) -> uuid.UUID:
        body = {
            "display_name": display_name,
            "region_cells": region_cells,
            "region_countries": region_countries,
        }
        answer = await self._call("POST", "/v1/monitors", json=body)
        return uuid.UUID(answer["id"])

    async def enrollment_code(self, monitor_id: uuid.UUID) -> str:
        answer = await self._call("POST", f"/v1/monitors/{monitor_id}/enrollment-codes", json={})
        return str(answer["code"])

    async def revoke_device(self, device_id: uuid.UUID) -> None:
        await self._call("POST", f"/v1/devices/{device_id}/revoke", json={})

    async def list_all(self, path: str, params: dict[str, str] | None = None) -> list[Any] | None:
        """Every item of a list endpoint, following ``next_page_token``; None if there is no such
        endpoint (yet)."""
        items: list[Any] = []
        query = dict(params or {})
        while True:
            try:
                answer = await self._call("GET", path, params=query)
            except NotFound:
                return None
            if isinstance(answer, list):
                return answer
            items.extend(answer.get("items", []))
            token = answer.get("next_page_token")
            if not token:
                return items
            query["page_token"] = str(token)
