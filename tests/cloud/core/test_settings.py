"""The cloud's settings keep the names an operator's files already have."""

import os

from cloud.core import settings


def test_the_default_database_is_cloud_db_in_the_var_folder(tmp_path):
    """An upgrade must find the database it wrote before: <var>/cloud.db (the layout move once renamed it)."""
    s = settings.parse(["--var", str(tmp_path)])
    assert s.db == f"sqlite:///{os.path.abspath(os.path.join(str(tmp_path), 'cloud.db'))}"
