"""Logging and tracing set-up shared by every service."""

from atelier_telemetry.setup import configure_telemetry, instrument_fastapi

__all__ = ["configure_telemetry", "instrument_fastapi"]
