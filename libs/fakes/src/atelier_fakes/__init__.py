"""Fake provider servers speaking real wire formats, for tests and offline development."""
