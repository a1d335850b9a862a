"""The cloud's settings keep the names an operator's files already have."""

import os

from cloud.core import settings


def test_the_default_database_is_cloud_db_in_the_var_folder(tmp_path):
    """An upgrade must find the database it wrote before: <var>/cloud.db (the layout move once renamed it)."""
    s = settings.parse(["--var", str(tmp_path)])
    assert s.db == f"sqlite:///{os.path.abspath(os.path.join(str(tmp_path), 'cloud.db'))}"


def test_a_time_zone_that_is_not_one_stops_the_cloud_naming_the_option(tmp_path):
    import pytest
    from cloud.core.settings import Settings

    with pytest.raises(SystemExit, match=r"--time-zone 'Mars/Olympus': not a time zone"):
        Settings(var=str(tmp_path), time_zone="Mars/Olympus").resolve()
    assert Settings(var=str(tmp_path), time_zone="Asia/Shanghai").resolve().time_zone == "Asia/Shanghai"
