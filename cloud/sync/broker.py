"""The embedded MQTT broker (amqtt) for the one-command demo; production runs Mosquitto.

amqtt speaks MQTT 3.1.1 only, so clients of the embedded broker use protocol 3.1.1 and the cloud does not
use shared subscriptions with it.
"""

from __future__ import annotations

import asyncio
import logging
import threading

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """amqtt on its own thread and event loop; ``start`` returns once it listens."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)

    def start(self, timeout: float = 15.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("embedded broker did not start in time")
        if self._error is not None:
            raise RuntimeError(f"embedded broker could not listen on {self.host}:{self.port}: {self._error}")
        log.info("embedded MQTT broker listening on %s:%d", self.host, self.port)

    def _run(self) -> None:
        from amqtt.broker import Broker

        # amqtt logs every packet at INFO; the cloud's log is for the cloud.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        try:
            self._broker = Broker(config, loop=self._loop)
            self._loop.run_until_complete(self._broker.start())
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._loop is None or self._broker is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            future.result(timeout=10)
        except Exception:
            log.exception("embedded broker did not shut down cleanly")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    """Run the embedded broker alone: ``python -m cloud.broker --port 1884`` (tests, and clouds that share it)."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m cloud.broker", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    broker = EmbeddedBroker(args.host, args.port)
    broker.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
