"""One way to make a paho-mqtt client for either side: MQTT 5 for Mosquitto, 3.1.1 for the embedded broker."""

from __future__ import annotations

import socket

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
    client.on_socket_open = no_delay
    return client


def no_delay(client: mqtt.Client, userdata, sock) -> None:
    """Nagle off (paho leaves it on): an ack, a vend command, an event is one small packet that is wanted
    now, not after the peer's acknowledgement of the one before (up to 40 ms on Linux). The broker the cloud
    writes has it off too (``set_tcp_nodelay``)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket: nothing to turn off
        pass


def connect_async(client: mqtt.Client, host: str, port: int, keepalive: int, *, persistent: bool) -> None:
    """Start connecting in the background; paho's loop thread reconnects on its own after that."""
    if client.protocol == mqtt.MQTTv5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S if persistent else 0
        client.connect_async(host, port, keepalive, clean_start=not persistent, properties=props)
    else:
        client.connect_async(host, port, keepalive)
