"""The machine's side of sync: which ledger events to publish, and when to publish them again.

A plain class told what happened and when ("connected at t", "ack for seq N arrived at t", "tick at t",
"resend from N") that answers with the batches to publish, in order. It owns no thread, no clock and no
MQTT client: the daemon publishes what it returns and says which batch was not accepted. It keeps at most
``window`` batches in flight (paho refuses QoS 1 publishes past 65,535 in flight and otherwise queues
without limit), trusts only the cloud's own ack (the broker's PUBACK does not mean the cloud stored the
events), resends from the acked mark when no ack comes for ``resend_after_s``, and learns the cloud's clock
from every ack: a Pi has no real-time clock. The cloud also acks each status (seq 0, the clock alone), so an
idle machine hears the time too. Between acks the wall clock may be stepped (NTP after a boot without a
real-time clock): a step is seen against the monotonic clock and the offset re-based, so the cloud's time
as the machine sees it does not jump with it.
"""

from __future__ import annotations

import logging

from protocol.messages import EventBatch

log = logging.getLogger(__name__)

# The wall clock moving this far from the monotonic clock since the last ack is a step, not slewing
# (NTP slews at most 0.5 ms a second).
CLOCK_STEP_S = 1.0


class Sync:
    """The publish window over one ledger (anything with ``head``, ``acked``, ``set_acked``, ``read`` and
    ``ledger_id``)."""

    def __init__(self, ledger, *, batch_size: int, window: int, resend_after_s: float):
        self.ledger = ledger
        self.batch_size = batch_size
        self.window = window
        self.resend_after_s = resend_after_s
        self.sent_upto = 0  # the last seq handed out to publish; above the acked mark while batches are in flight
        self.last_progress = 0.0  # when the acked mark last moved, or when nothing was in flight
        # (the cloud's clock minus our wall clock, our wall clock minus the monotonic clock), both as of
        # the last ack or step; one tuple, replaced whole, because other threads read it (cloud_now).
        self._clock: tuple[float, float] | None = None

    @property
    def clock_synced(self) -> bool:
        """Whether an ack has told us the cloud's clock since the start."""
        return self._clock is not None

    @property
    def clock_offset(self) -> float | None:
        """The cloud's clock minus our wall clock, from the last ack; None before the first."""
        return self._clock[0] if self._clock else None

    def _step(self, wallclock: float, monotonic: float) -> float:
        """How far the wall clock was stepped since the offset was learned; 0 when it was not."""
        if self._clock is None:
            return 0.0
        step = (wallclock - monotonic) - self._clock[1]
        return step if abs(step) > CLOCK_STEP_S else 0.0

    def cloud_now(self, wallclock: float, monotonic: float) -> float:
        """Our best idea of the cloud's clock, given our own clocks; a wall-clock step does not move it.
        Reads only: safe from any thread."""
        if self._clock is None:
            return wallclock  # nothing learned from the cloud: the wall clock, stepped or not, is all we have
        return wallclock + self._clock[0] - self._step(wallclock, monotonic)

    def check_clock(self, wallclock: float, monotonic: float) -> float:
        """Re-base the offset if the wall clock was stepped since the last ack; returns the step (0: none)."""
        step = self._step(wallclock, monotonic)
        if step:
            offset, wall_minus_mono = self._clock
            self._clock = (offset - step, wall_minus_mono + step)
            log.warning("wall clock stepped by %+.1f s; the cloud's clock is kept from the last ack", step)
        return step

    def heard(self, cloud_time: float, wallclock: float, monotonic: float) -> None:
        """A message from the cloud said its clock read ``cloud_time`` (our clocks then)."""
        self._clock = (cloud_time - wallclock, wallclock - monotonic)

    def connected(self, now: float) -> list[EventBatch]:
        """A new connection: whatever was in flight may be lost, so everything unacked goes again."""
        log.info("connected to broker; resending from %d", self.ledger.acked + 1)
        self.sent_upto = self.ledger.acked
        self.last_progress = now
        return self.due(now)

    def ack(self, seq: int, cloud_time: float, now: float, wallclock: float) -> list[EventBatch]:
        """The cloud stored every event up to ``seq`` and its clock read ``cloud_time`` (our wall clock then)."""
        self.heard(cloud_time, wallclock, now)
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
            batches.append(EventBatch(tuple(events), self.ledger.ledger_id))
            self.sent_upto = events[-1].seq
        return batches

    def not_sent(self, batch: EventBatch) -> None:
        """The link did not take ``batch`` (and so none after it): they are due again from its first event."""
        self.sent_upto = min(self.sent_upto, batch.events[0].seq - 1)


class Heartbeat:
    """When to publish the retained status: every ``every_s``, and within ``min_gap_s`` of a new ledger head.

    A plain schedule told "head is h at t" that answers whether a status is due; the daemon and the fleet
    benchmark's simulated machines both use it, so the benchmark sends what a machine sends."""

    def __init__(self, every_s: float = 30.0, min_gap_s: float = 2.0):
        self.every_s = every_s
        self.min_gap_s = min_gap_s
        self.next_at = 0.0
        self.head = 0  # the ledger head the last status told

    def due(self, head: int, now: float) -> bool:
        return now >= self.next_at or (head != self.head and now >= self.next_at - self.every_s + self.min_gap_s)

    def sent(self, head: int, now: float) -> None:
        self.head = head
        self.next_at = now + self.every_s
