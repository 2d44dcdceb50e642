"""A toy service's migrations, for testing the helper: one table, two revisions."""

from pathlib import Path

import sqlalchemy as sa
from alembic import context

from atelier_database.migrations import Migrations, run_env

metadata = sa.MetaData()
toy_items = sa.Table(
    "toy_items",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("name", sa.String(length=50), nullable=False, index=True),
    sa.Column("note", sa.Text(), nullable=True),
)
# Tests change the model without a revision through this attribute.
for column in context.config.attributes.get("extra_columns", ()):
    toy_items.append_column(column)

run_env(Migrations("toy", Path(__file__).parent), [toy_items])
