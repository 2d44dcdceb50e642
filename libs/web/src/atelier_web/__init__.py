"""FastAPI pieces every service shares: error shape, health routes, the service app, the server."""

from atelier_web.app import (
    INSTANCE_ID_ENV,
    ReadinessCheck,
    create_service_app,
    error_body,
    serve,
)
from atelier_web.background import Background, every
from atelier_web.runner import Option, run_service

__all__ = [
    "INSTANCE_ID_ENV",
    "Background",
    "Option",
    "ReadinessCheck",
    "create_service_app",
    "error_body",
    "every",
    "run_service",
    "serve",
]
