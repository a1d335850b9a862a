"""One way to make a paho-mqtt client for either side: MQTT 5 for Mosquitto, 3.1.1 for the embedded broker."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

PROTOCOLS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}
SESSION_EXPIRY_S = 7 * 24 * 3600  # a machine offline for a week still finds its commands queued


def make_client(client_id: str, protocol: str, *, persistent: bool) -> mqtt.Client:
    """A client with a stable id; ``persistent`` keeps its session and queued QoS 1 messages across drops."""
    version = PROTOCOLS[protocol]
    kwargs = {}
    if version != mqtt.MQTTv5:
        kwargs["clean_session"] = not persistent
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version,
                         reconnect_on_failure=True, **kwargs)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.max_queued_messages_set(0)
    return client


def connect_async(client: mqtt.Client, host: str, port: int, keepalive: int, *, persistent: bool) -> None:
    """Start connecting in the background; paho's loop thread reconnects on its own after that."""
    if client.protocol == mqtt.MQTTv5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S if persistent else 0
        client.connect_async(host, port, keepalive, clean_start=not persistent, properties=props)
    else:
        client.connect_async(host, port, keepalive)
