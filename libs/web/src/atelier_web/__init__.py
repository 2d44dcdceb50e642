"""FastAPI pieces every service shares: error shape, health routes, the service app, the server."""

from atelier_web.app import (
    INSTANCE_ID_ENV,
    ReadinessCheck,
    create_service_app,
    error_body,
    serve,
)

__all__ = ["INSTANCE_ID_ENV", "ReadinessCheck", "create_service_app", "error_body", "serve"]
