"""Alembic environment: migrations run on the connection ``Database.upgrade`` gives."""

from alembic import context
from sqlalchemy import create_engine

from grscos.storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    # `alembic revision --autogenerate` from a shell: compare against -x url=...
    url = context.get_x_argument(as_dictionary=True)["url"]
    connection = create_engine(url).connect()

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
