"""The cloud's settings keep the names an operator's files already have."""

import os

import pytest

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


def test_the_default_mqtt_client_id_is_one_no_machine_can_have(tmp_path):
    """On the machine listeners a login is its client id: a machine whose id (a certificate's CN) or password
    login equalled the cloud's client id would knock the cloud off the broker each time it connected. The
    old default, vend-cloud-1, was a valid machine id."""
    from cloud.provisioning.brokerfiles import password_username  # test-only: the machine's login names
    from protocol.topics import ProtocolError, check_machine_id

    s = settings.parse(["--var", str(tmp_path)])
    assert s.client_id == "vend_cloud-1"
    with pytest.raises(ProtocolError):
        check_machine_id(s.client_id)
    with pytest.raises(ProtocolError):
        password_username(s.client_id.rsplit("-", 1)[0], 1)


@pytest.mark.parametrize("client_id", ["vend-cloud-1", "cloud-8000", "lobby-3.2"])
def test_a_client_id_a_machine_could_connect_as_is_refused_naming_the_option(tmp_path, client_id, capsys):
    with pytest.raises(SystemExit) as e:
        settings.parse(["--var", str(tmp_path), "--client-id", client_id])
    assert f"--client-id {client_id!r}: a machine could connect under this id" in str(e.value)


def test_a_client_id_with_an_underscore_is_taken(tmp_path):
    assert settings.parse(["--var", str(tmp_path), "--client-id", "vend_cloud-2"]).client_id == "vend_cloud-2"


def test_a_cloud_with_no_ingest_gets_its_own_client_id_and_keeps_a_chosen_one(tmp_path, monkeypatch):
    """Two processes under one MQTT client id knock each other off the broker in turn: the web process of a
    split cloud (--no-ingest, or VEND_INGEST=0 in its unit) must not take the ingesting one's default."""
    s = settings.parse(["--var", str(tmp_path), "--no-ingest"])
    assert (s.ingest, s.client_id) == (False, "vend_cloud-web")
    assert settings.parse(["--var", str(tmp_path), "--no-ingest", "--client-id", "vend_cloud-7"]).client_id \
        == "vend_cloud-7"
    monkeypatch.setenv("VEND_INGEST", "0")
    assert settings.parse(["--var", str(tmp_path)]).ingest is False
    monkeypatch.setenv("VEND_INGEST", "1")
    assert settings.parse(["--var", str(tmp_path)]).client_id == "vend_cloud-1"
    monkeypatch.setenv("VEND_INGEST", "sometimes")
    with pytest.raises(SystemExit, match="VEND_INGEST='sometimes'"):
        settings.parse(["--var", str(tmp_path)])
