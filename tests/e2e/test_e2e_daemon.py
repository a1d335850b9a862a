"""The controller as systemd runs it: notify, watchdog, a clean stop, and a config it refuses to start with."""

import os
import signal
import socket
import subprocess
import sys

from tests.e2e.harness import Machine, wait_until


def test_controller_notifies_systemd_pings_the_watchdog_and_stops_cleanly(broker, cloud, tmp_path):
    sock_path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(sock_path)
    listener.settimeout(15)
    machine = Machine(cloud, broker, str(tmp_path), "m-notify")
    machine.proc.env = {"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "1000000"}
    machine.start()
    messages = []
    try:
        while not any("WATCHDOG=1" in m for m in messages) or len(messages) < 3:
            messages.append(listener.recv(4096).decode())
        assert messages[0].startswith("READY=1")
        assert messages.count("WATCHDOG=1") >= 2  # every half second with a 1 s watchdog
        wait_until(lambda: cloud.machine("m-notify")["online"], 10, "the machine to come online")
        machine.proc.signal(signal.SIGTERM)
        assert machine.proc.proc.wait(15) == 0
        while "STOPPING=1" not in messages:
            messages.append(listener.recv(4096).decode())
    finally:
        listener.close()
        machine.proc.stop()
    log = open(machine.proc.log_path).read()
    assert "stopping: motors off" in log and "stopped" in log
    # Its own "offline" reached the cloud, and the ledger stayed consistent.
    wait_until(lambda: cloud.machine("m-notify")["online"] is False, 10, "the machine to be shown offline")
    assert [k for _seq, k, _d, _h in machine.ledger()][:1] == ["boot"]


def test_a_config_with_an_unknown_key_stops_the_controller_with_a_clear_error(tmp_path):
    config = tmp_path / "controller.ini"
    config.write_text("[machine]\nid = m1\nsecret = 0123456789abcdef\n[cloud]\nurl = http://x\n"
                      "[hardware]\nbackend = sim\nslots = A1\n[vend]\ndrop_timout_s = 3\n")
    out = subprocess.run([sys.executable, "-m", "controller", "--config", str(config)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2
    assert f"{config}: unknown key 'drop_timout_s' in [vend]" in out.stderr
    assert not os.path.exists(tmp_path / "ledger.db")
