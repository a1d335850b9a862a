"""A planogram set through the cloud's API reaches the real controller over the real broker, retained: the
machine applies it, records config.applied, and the cloud shows it applied; a machine that was stopped
while it changed gets it on restart; an older version, a malformed config and a config naming a slot the
machine lacks change nothing on the machine."""

import pytest
from tests.e2e.harness import PRODUCTS, Machine, wait_until

from protocol import topics
from protocol.messages import Config, ConfigSlot

MACHINE = "p1"


@pytest.fixture(scope="module")
def machine(cloud, broker, tmp_path_factory):
    m = Machine(cloud, broker, str(tmp_path_factory.mktemp("planogram")), MACHINE)
    m.start()
    yield m
    m.proc.stop()


def planogram_body(price_step: int, note: str, extra: tuple = ()) -> dict:
    slots = [{"slot": s, "sku": sku, "price": price + price_step, "currency": "CNY", "capacity": 10, "par_level": 7}
             for s, sku, _name, price in PRODUCTS]
    slots += [{"slot": s, "sku": "water", "price": 100, "currency": "CNY", "capacity": 5, "par_level": 1}
              for s in extra]
    return {"slots": slots, "note": note}


def applied_on_machine(m) -> list[int]:
    return [e["version"] for e in m.events_of("config.applied")]


def shown(cloud) -> dict:
    return cloud.api("GET", f"/api/v1/machines/{MACHINE}/planogram")


def on_machine(m) -> dict:
    return m.request({"op": "status"})["planogram"]


def test_a_planogram_set_through_the_api_is_applied_by_the_machine_and_shown_applied(cloud, machine):
    # The harness set the slots with PUT .../slots: that was version 1, sent before the machine started.
    wait_until(lambda: applied_on_machine(machine) == [1], 30, "the machine to apply version 1")
    result = cloud.api("POST", f"/api/v1/machines/{MACHINE}/planogram", planogram_body(50, "dearer"))
    assert (result["version"], result["published"]) == (2, True)
    wait_until(lambda: applied_on_machine(machine) == [1, 2], 30, "the machine to apply version 2")
    assert on_machine(machine)["slots"]["A1"] == ["Water", 250, "CNY", 10, 7]
    wait_until(lambda: shown(cloud)["state"] == "applied", 30, "the cloud to show version 2 applied")
    got = shown(cloud)
    assert (got["desired_version"], got["applied_version"]) == (2, 2)
    assert cloud.machine(MACHINE)["planogram"]["state"] == "applied"


def retained_config(broker) -> Config:
    """What the broker hands a new subscriber of the machine's config topic: the retained planogram."""
    got = []
    client = broker.client("e2e-retained-reader")
    client.on_message = lambda c, u, msg: got.append(msg) if msg.topic.endswith("/config") else None
    try:
        client.subscribe(topics.topic(MACHINE, "config"), qos=1)
        wait_until(lambda: got, 10, "the retained config")
    finally:
        client.loop_stop()
        client.disconnect()
    assert got[0].retain
    return Config.decode(got[0].payload)


def test_a_machine_stopped_while_the_planogram_changed_gets_it_when_it_starts(broker, cloud, machine):
    machine.proc.stop()
    wait_until(lambda: not cloud.machine(MACHINE)["online"], 30, "the cloud to see the machine offline")
    result = cloud.api("POST", f"/api/v1/machines/{MACHINE}/planogram", planogram_body(80, "while it was off"))
    version = result["version"]
    assert shown(cloud)["state"] == "pending"
    assert retained_config(broker).version == version  # kept by the broker for whoever subscribes next
    machine.start()
    wait_until(lambda: version in applied_on_machine(machine), 30, "the restarted machine to apply it")
    assert on_machine(machine)["version"] == version
    assert on_machine(machine)["slots"]["B2"][1] == 550 + 80
    wait_until(lambda: shown(cloud)["applied_version"] == version, 30, "the cloud to show it applied")


def test_an_older_version_or_a_malformed_config_changes_nothing(broker, machine):
    before = on_machine(machine)
    head = machine.head()
    client = broker.client("e2e-old-config")
    try:
        older = Config(before["version"] - 1, (ConfigSlot("A1", "Old water", 1, "CNY", 10, 1),))
        client.publish(topics.topic(MACHINE, "config"), older.encode(), qos=1).wait_for_publish(10)
        wait_until(lambda: on_machine(machine)["ignored"] > before["ignored"], 20, "the machine to ignore it")
        rejected = machine.request({"op": "status"})["rejected_messages"]
        client.publish(topics.topic(MACHINE, "config"), b'{"v": 1, "version": 99, "slots": "A1"}',
                       qos=1).wait_for_publish(10)
        wait_until(lambda: machine.request({"op": "status"})["rejected_messages"] > rejected, 20,
                   "the machine to drop the malformed config")
    finally:
        client.loop_stop()
        client.disconnect()
    after = on_machine(machine)
    assert (after["version"], after["slots"]) == (before["version"], before["slots"])
    assert machine.head() == head  # not a single fact written


def test_a_config_naming_a_slot_the_machine_lacks_is_refused_and_shown_rejected(cloud, machine):
    before = on_machine(machine)["version"]
    result = cloud.api("POST", f"/api/v1/machines/{MACHINE}/planogram", planogram_body(0, "a cabinet too many",
                                                                                       extra=("C9",)))
    wait_until(lambda: shown(cloud)["state"] == "rejected", 30, "the cloud to show the refusal")
    assert shown(cloud)["rejected_version"] == result["version"]
    assert "no slot C9 on this machine" in shown(cloud)["rejected_reason"]
    assert on_machine(machine)["version"] == before
    assert [e["cmd_id"] for e in machine.events_of("command.rejected")] == [f"config-{result['version']}"]
    fixed = cloud.api("POST", f"/api/v1/machines/{MACHINE}/planogram", planogram_body(0, "without C9"))
    wait_until(lambda: shown(cloud)["applied_version"] == fixed["version"], 30, "the next version to be applied")
