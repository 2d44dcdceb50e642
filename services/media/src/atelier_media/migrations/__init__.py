"""The media service's database migrations (Alembic); revisions in `versions/`.

Run to head at start-up, or by `python -m atelier_media --migrate-only` as a one-shot job. A
schema change is a new revision: docs/operations.md, "Database schemas".
"""

from pathlib import Path

from atelier_database import Migrations

MIGRATIONS = Migrations("media", Path(__file__).parent)
