"""The application factory: ``create_app(settings)`` builds the Litestar app and nothing else.

Resources (database pool, blob store) are opened in the app's lifespan and closed with it. With no
``FAIRWATCH_DATABASE_URL`` the lifespan starts the embedded PostgreSQL under the data directory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from server.auth import AuthMiddleware, Principal, device_of, principal_of
from server.logs import RequestIdMiddleware
from server.problems import exception_handlers
from server.ratelimit import RateLimitMiddleware, RateLimits
from server.resources import provide_conn
from server.routes import (
    alerts,
    attachments,
    audit,
    auth,
    cases,
    health,
    matching,
    monitors,
    registry,
    reports,
    sync,
    users,
)
from server.runtime import open_resources
from server.scheduler import run_scheduler
from server.settings import Settings
from server.worker import WorkerContext, run_worker
from storage.devices import DeviceAuth

__all__ = ["create_app"]

ROUTES = [
    health.healthz,
    health.readyz,
    auth.login,
    auth.logout,
    auth.me,
    auth.list_sessions,
    auth.revoke_session,
    users.get_org,
    users.list_users,
    users.create_user,
    users.get_user,
    users.update_user,
    monitors.create_monitor,
    monitors.list_monitors,
    monitors.get_monitor,
    monitors.create_enrollment_code,
    monitors.list_devices,
    monitors.revoke_device,
    reports.list_report_summaries,
    reports.get_report,
    reports.list_report_conflicts,
    reports.resolve,
    *attachments.ROUTES,
    registry.create_entity,
    registry.list_entities,
    registry.get_entity,
    registry.update_entity,
    registry.delete_entity,
    registry.import_licence_list,
    sync.enroll,
    sync.push,
    sync.pull,
    sync.start_attachment,
    sync.attachment_status,
    sync.put_attachment_part,
    *matching.ROUTES,
    *cases.ROUTES,
    *alerts.ROUTES,
    *audit.ROUTES,
]


def _provide_principal(request: Request) -> Principal:  # type: ignore[type-arg]
    return principal_of(request)


def _provide_device(request: Request) -> DeviceAuth:  # type: ignore[type-arg]
    return device_of(request)


def _rate_limits(settings: Settings) -> RateLimits:
    def burst(per_minute: int) -> int:
        return max(10, per_minute // 4)

    return RateLimits(
        device_per_minute=settings.rate_device_per_minute,
        device_burst=burst(settings.rate_device_per_minute),
        staff_per_minute=settings.rate_staff_per_minute,
        staff_burst=burst(settings.rate_staff_per_minute),
        anonymous_per_minute=settings.rate_anonymous_per_minute,
        anonymous_burst=burst(settings.rate_anonymous_per_minute),
    )


def create_app(settings: Settings, *, background: frozenset[str] = frozenset()) -> Litestar:
    """Build the app; ``background`` may hold "worker" and "scheduler" to run them in-process."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
        resources = await open_resources(settings)
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        try:
            app.state.resources = resources
            if "worker" in background:
                context = WorkerContext(resources=resources)
                tasks.append(
                    asyncio.create_task(
                        run_worker(resources.pool, stop, settings.worker_poll_seconds, context)
                    )
                )
            if "scheduler" in background:
                tasks.append(
                    asyncio.create_task(run_scheduler(resources.dsn, resources.pool, stop))
                )
            yield
        finally:
            stop.set()
            if tasks:
                await asyncio.wait(tasks, timeout=15)
            await asyncio.wait_for(resources.pool.close(), timeout=10)

    return Litestar(
        route_handlers=ROUTES,
        lifespan=[lifespan],
        state=State({"settings": settings}),
        dependencies={
            "db": Provide(provide_conn),
            "principal": Provide(_provide_principal, sync_to_thread=False),
            "device": Provide(_provide_device, sync_to_thread=False),
        },
        middleware=[
            RequestIdMiddleware,
            DefineMiddleware(
                AuthMiddleware, exclude_from_auth_key="exclude_from_auth", exclude=["^/docs"]
            ),
            # After authentication, so that limits count per device and per staff member.
            DefineMiddleware(RateLimitMiddleware, limits=_rate_limits(settings)),
        ],
        exception_handlers=exception_handlers,
        # Logging is configured once by the CLI (JSON lines with request ids); Litestar's default
        # configuration would replace it with plain text.
        logging_config=None,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Fairwatch API",
            version="0.1.0",
            description="Community monitoring of migrant workers' labour conditions.",
            path="/docs",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
        debug=False,
    )
