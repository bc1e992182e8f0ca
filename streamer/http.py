"""The one HTTP port: /metrics (Prometheus text), /healthz (alive), /readyz (serving)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HttpServer:
    """``healthy``/``ready`` are callables so the probes always reflect the live state.

    /healthz answering at all proves the event loop is responsive (the handler runs on it);
    it also turns 503 when a pipeline task has died, so Kubernetes restarts the pod.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        healthy: Callable[[], tuple[bool, str]],
        ready: Callable[[], tuple[bool, str]],
        host: str,
        port: int,
    ) -> None:
        self._registry = registry
        self._healthy = healthy
        self._ready = ready
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _probe(self, check: Callable[[], tuple[bool, str]]) -> web.Response:
        ok, why = check()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    async def _healthz(self, _: web.Request) -> web.Response:
        return await self._probe(self._healthy)

    async def _readyz(self, _: web.Request) -> web.Response:
        return await self._probe(self._ready)

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        addresses = self._runner.addresses  # the bound sockets: port 0 becomes the real port
        self.port = int(addresses[0][1]) if addresses else self._port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
