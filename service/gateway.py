"""The BentoML service: the gateway's Starlette app mounted at the root of a BentoML 1.4 service.

``bentoml serve service.gateway:Gateway`` (or ``modelgate serve``) runs it; the
registry and worker count come from the environment (see ``Settings``).
"""

from __future__ import annotations

import bentoml

from monitoring.logs import configure_logging
from service.app import create_app
from service.settings import Settings

settings = Settings.from_env()
configure_logging()
app = create_app(settings)


@bentoml.service(
    name="modelgate",
    workers=settings.workers,
    traffic={"timeout": 60},
    logging={"access": {"enabled": False}},
)
@bentoml.asgi_app(app, path="/")
class Gateway:
    """All routes live in ``service.app``; BentoML adds /livez, /readyz and /metrics."""

    def __is_ready__(self) -> bool:
        return bool(app.state.context.readiness()["ready"])
