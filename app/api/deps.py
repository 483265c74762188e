"""Dependencies shared by the routes: the model registry, the settings, the fair compute queue
of this worker, and who the client is."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from app.core.config import Settings
from app.middleware import client_of
from app.registry import ModelRegistry
from app.scheduler import FairScheduler


# async: a plain def dependency would cost each request a trip through the thread pool
async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_scheduler(request: Request) -> FairScheduler:
    scheduler: FairScheduler = request.app.state.scheduler
    return scheduler


async def get_disconnected(request: Request) -> Callable[[], Awaitable[None]]:
    """A wait that ends when the client disconnects (the body has been read by then: the next
    ASGI message is the disconnect), so a request nobody waits for stops computing."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return disconnected


async def get_client(request: Request) -> str:
    """Who sent the request, for the fair queue: the peer's address."""
    return client_of(request.scope)


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SchedulerDep = Annotated[FairScheduler, Depends(get_scheduler)]
ClientDep = Annotated[str, Depends(get_client)]
DisconnectedDep = Annotated[Callable[[], Awaitable[None]], Depends(get_disconnected)]
