"""The machine's side of sync: which ledger events to publish, and when to publish them again.

A plain class told what happened and when ("connected at t", "ack for seq N arrived at t", "tick at t",
"resend from N") that answers with the batches to publish, in order. It owns no thread, no clock and no
MQTT client: the daemon publishes what it returns and says which batch was not accepted. It keeps at most
``window`` batches in flight (paho refuses QoS 1 publishes past 65,535 in flight and otherwise queues
without limit), trusts only the cloud's own ack (the broker's PUBACK does not mean the cloud stored the
events), resends from the acked mark when no ack comes for ``resend_after_s``, and learns the cloud's clock
from every ack: a Pi has no real-time clock.
"""

from __future__ import annotations

import logging

from protocol.messages import EventBatch

log = logging.getLogger(__name__)


class Sync:
    """The publish window over one ledger (anything with ``head``, ``acked``, ``set_acked`` and ``read``)."""

    def __init__(self, ledger, *, batch_size: int, window: int, resend_after_s: float):
        self.ledger = ledger
        self.batch_size = batch_size
        self.window = window
        self.resend_after_s = resend_after_s
        self.sent_upto = 0  # the last seq handed out to publish; above the acked mark while batches are in flight
        self.last_progress = 0.0  # when the acked mark last moved, or when nothing was in flight
        self.clock_offset: float | None = None  # the cloud's clock minus ours, from the last ack

    @property
    def clock_synced(self) -> bool:
        """Whether an ack has told us the cloud's clock since the start."""
        return self.clock_offset is not None

    def cloud_now(self, wallclock: float) -> float:
        """Our best idea of the cloud's clock, given our own wall clock."""
        return wallclock + (self.clock_offset or 0.0)

    def connected(self, now: float) -> list[EventBatch]:
        """A new connection: whatever was in flight may be lost, so everything unacked goes again."""
        log.info("connected to broker; resending from %d", self.ledger.acked + 1)
        self.sent_upto = self.ledger.acked
        self.last_progress = now
        return self.due(now)

    def ack(self, seq: int, cloud_time: float, now: float, wallclock: float) -> list[EventBatch]:
        """The cloud stored every event up to ``seq`` and its clock read ``cloud_time`` (our wall clock then)."""
        self.clock_offset = cloud_time - wallclock
        if seq > self.ledger.head:
            log.error("cloud acks seq %d but the ledger ends at %d: is this the right ledger?", seq, self.ledger.head)
        if not self.ledger.set_acked(seq):
            return []
        self.last_progress = now
        return self.due(now)

    def resend_from(self, seq: int, now: float) -> list[EventBatch]:
        """The cloud found a gap; it may even ask for events it once acked (a restored backup)."""
        self.sent_upto = min(self.sent_upto, seq - 1)
        return self.due(now)

    def tick(self, now: float) -> list[EventBatch]:
        """Time passes: with batches in flight and no ack for ``resend_after_s``, send again from the mark."""
        acked = self.ledger.acked
        if self.sent_upto > acked and now - self.last_progress > self.resend_after_s:
            log.warning("no ack for %d s; resending from %d", now - self.last_progress, acked + 1)
            self.sent_upto = acked
            self.last_progress = now
            return self.due(now)
        return []

    def due(self, now: float) -> list[EventBatch]:
        """The batches to publish now, in order: unacked events not yet sent, within the window."""
        acked = self.ledger.acked
        if self.sent_upto <= acked:
            self.last_progress = now  # nothing in flight: the resend timer starts with the next batch
        limit = self.window * self.batch_size
        batches = []
        while self.sent_upto < self.ledger.head and self.sent_upto - acked < limit:
            events = self.ledger.read(self.sent_upto + 1, self.batch_size)
            if not events:
                break
            batches.append(EventBatch(tuple(events)))
            self.sent_upto = events[-1].seq
        return batches

    def not_sent(self, batch: EventBatch) -> None:
        """The link did not take ``batch`` (and so none after it): they are due again from its first event."""
        self.sent_upto = min(self.sent_upto, batch.events[0].seq - 1)
