"""The machine's MQTT link: the one owner of the paho client.

paho runs its callbacks on its own network thread; they only put what arrived into the controller's inbox
and return, so a slow disk can never stall keep-alives. Publishing is thread-safe in paho and is done by
the controller's main loop, which checks the result of every publish.
"""

from __future__ import annotations

import logging
import queue
import ssl

import paho.mqtt.client as mqtt

from protocol import topics
from protocol.messages import Status
from protocol.mqtt import connect_async, make_client

from .inbox import Connected, Disconnected, MqttMessage

log = logging.getLogger(__name__)


class Link:
    """The MQTT connection of one machine: subscribes to its ack, cmd and config topics; publishes for it."""

    def __init__(self, settings, machine_id: str, inbox: queue.Queue):
        self.settings = settings
        self.machine_id = machine_id
        self.inbox = inbox
        self.connected = False
        self.last_error = ""  # why the last connection failed or ended, for the self-test's broker line
        self.client = make_client(machine_id, settings.protocol, persistent=True)
        self.client.will_set(topics.topic(machine_id, "status"), Status(online=False).encode(), qos=1, retain=True)
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password or None)
        if settings.tls:
            self.client.tls_set(ca_certs=settings.ca_file or None, certfile=settings.cert_file or None,
                                keyfile=settings.key_file or None, cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_connect_fail = self._on_connect_fail

    def start(self) -> None:
        s = self.settings
        connect_async(self.client, s.host, s.port, s.keepalive_s, persistent=True)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker %s:%s refused the connection: %s", self.settings.host, self.settings.port,
                      reason_code)
            self.last_error = f"refused: {reason_code}"
            return
        # config is retained: the broker hands over the newest planogram on every subscribe, so a machine
        # that was off while it changed gets it here.
        client.subscribe([(topics.topic(self.machine_id, kind), 1) for kind in ("ack", "cmd", "config")])
        self.connected = True
        self.inbox.put(Connected())

    def _on_connect_fail(self, client, userdata) -> None:
        self.last_error = "no connection (no route, no such host, refused, or TLS failed)"

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected or not self.last_error:
            self.last_error = f"disconnected: {reason_code}"
        self.connected = False
        self.inbox.put(Disconnected(str(reason_code)))

    def _on_message(self, client, userdata, message) -> None:
        self.inbox.put(MqttMessage(message.topic, message.payload))

    def publish(self, kind: str, payload: bytes, *, retain: bool = False) -> bool:
        """Hand one message to paho; False if it was not accepted (not connected, queue full)."""
        qos = topics.KINDS[kind][0]
        info = self.client.publish(topics.topic(self.machine_id, kind), payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("publish to %s not accepted: %s", kind, mqtt.error_string(info.rc))
            return False
        return True

    def close(self) -> None:
        """Drop the connection without a word (to come back at once with a new login)."""
        self.client.disconnect()
        self.client.loop_stop()

    def stop(self, final_status: Status) -> None:
        """Say "offline" ourselves (the last will is only for a crash), then close."""
        if self.connected:
            info = self.client.publish(topics.topic(self.machine_id, "status"), final_status.encode(), qos=1,
                                       retain=True)
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
