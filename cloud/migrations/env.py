"""Alembic environment: runs on the connection the cloud hands over, or on the URL in the config."""

from alembic import context
from sqlalchemy import create_engine

from cloud.schema import load_tables

config = context.config
target_metadata = load_tables()


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


run()
