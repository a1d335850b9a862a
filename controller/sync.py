"""The machine's side of sync: which ledger events to publish, and when to publish them again.

A plain class told what happened and when ("connected at t", "ack for seq N arrived at t", "tick at t",
"resend from N") that answers with the batches to publish, in order. It owns no thread, no clock and no
MQTT client: the daemon publishes what it returns and says which batch was not accepted. It keeps at most
``window`` batches in flight (paho refuses QoS 1 publishes past 65,535 in flight and otherwise queues
without limit), trusts only the cloud's own ack (the broker's PUBACK does not mean the cloud stored the
events), resends from the acked mark when no ack comes for ``resend_after_s``, and learns the cloud's clock
from every ack: a Pi has no real-time clock. The cloud also acks each status (seq 0, the clock alone), so an
idle machine hears the time too.

A busy cloud must not be buried by its own fleet (issue 16: ten thousand machines resending every 10 s to a
cloud whose acks took 8 s made it slower still). So a resend waits twice as long as the one before (up to
``resend_max_s``), each wait stretched by a random part (machines cut off together do not come back in step),
and sends one batch, not the window, until an ack shows the cloud moving again; events written while a batch
is in flight wait for its ack and go together (``coalesce``); and a cloud that says its queue is long
(``cloud_busy``: an ack of seq 0 with ``busy``) restarts the timer, since the events are with it. Between acks the wall clock may be stepped (NTP after a boot without a
real-time clock): a step is seen against the monotonic clock and the offset re-based, so the cloud's time
as the machine sees it does not jump with it.
"""

from __future__ import annotations

import logging
import random

from protocol.messages import EventBatch

log = logging.getLogger(__name__)

# The wall clock moving this far from the monotonic clock since the last ack is a step, not slewing
# (NTP slews at most 0.5 ms a second).
CLOCK_STEP_S = 1.0
# A message whose cloud time is this far behind the cloud's clock as we know it is late, not a correction
# (a broker's round trip is milliseconds; the cloud's own clock is NTP's and does not step back).
LATE_S = 2.0
# A busy cloud's estimate of its queue's wait is held this many times over, plus the margin (an estimate from
# the recent cost per message; a storm's batches grow), and never longer than the cap: an ack lost after the
# notice (a broker restart, a session gone) costs the machine a minute at most, as its own backoff would.
BUSY_HOLD_FACTOR = 1.5
BUSY_HOLD_MARGIN_S = 5.0
BUSY_HOLD_MAX_S = 60.0


class Sync:
    """The publish window over one ledger (anything with ``head``, ``acked``, ``set_acked``, ``read`` and
    ``ledger_id``)."""

    def __init__(self, ledger, *, batch_size: int, window: int, resend_after_s: float,
                 resend_max_s: float | None = None, jitter: float = 0.5, coalesce: bool = True,
                 rng: random.Random | None = None):
        self.ledger = ledger
        self.batch_size = batch_size
        self.window = window
        self.resend_after_s = resend_after_s
        # The longest wait between resends; resend_after_s for the old fixed timer.
        self.resend_max_s = max(resend_after_s, resend_max_s if resend_max_s is not None else 12 * resend_after_s)
        self.jitter = jitter
        self.coalesce = coalesce
        self.rng = rng or random.Random()
        self.sent_upto = 0  # the last seq handed out to publish; above the acked mark while batches are in flight
        self.last_progress = 0.0  # when the acked mark last moved, or when nothing was in flight
        self.resends = 0  # resends since the mark last moved: each one doubles the wait for the next
        self.timeout = self._timeout()
        self.in_flight_limit = window  # batches; 1 after a resend, the whole window again once an ack comes
        self.hold_s = 0.0  # how long a busy cloud asked us to wait for the batches in flight, from its notice
        # (the cloud's clock minus our wall clock, our wall clock minus the monotonic clock), both as of
        # the last ack or step; one tuple, replaced whole, because other threads read it (cloud_now).
        self._clock: tuple[float, float] | None = None

    def _timeout(self) -> float:
        """The wait before the next resend: doubled by every resend without progress, capped, stretched by
        a random part so that machines cut off together do not resend together."""
        base = min(self.resend_after_s * 2 ** min(self.resends, 30), self.resend_max_s)
        return base * (1 + self.jitter * self.rng.random())

    def _progress(self, now: float) -> None:
        self.last_progress = now
        self.resends = 0
        self.timeout = self._timeout()
        self.in_flight_limit = self.window
        self.hold_s = 0.0

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

    def heard(self, cloud_time: float, wallclock: float, monotonic: float) -> bool:
        """A message from the cloud said its clock read ``cloud_time`` (our clocks then); True if taken.

        A message that says the cloud's clock is well behind what we already know of it is a late one (queued
        in the broker while we were away, or replayed): the cloud's clock does not go back, so it is not
        taken. Had it been, a command issued a minute ago would look fresh (the fault run: a new card took
        its first time from an ack queued for the card it replaced, and ran that card's last vend again)."""
        if self._clock is not None and cloud_time < self.cloud_now(wallclock, monotonic) - LATE_S:
            log.info("a cloud clock %.1f s behind the one already known: a late message, not taken",
                     self.cloud_now(wallclock, monotonic) - cloud_time)
            return False
        self._clock = (cloud_time - wallclock, wallclock - monotonic)
        return True

    def connected(self, now: float) -> list[EventBatch]:
        """A new connection: whatever was in flight may be lost, so everything unacked goes again."""
        log.info("connected to broker; resending from %d", self.ledger.acked + 1)
        self.sent_upto = self.ledger.acked
        self.last_progress = now
        return self.due(now)

    def ack(self, seq: int, cloud_time: float, now: float, wallclock: float, ledger: str = "") -> list[EventBatch]:
        """The cloud stored every event up to ``seq`` of ``ledger`` ('': a cloud that does not say) and its
        clock read ``cloud_time`` (our wall clock then).

        An ack about another ledger (the one a new card replaced, its acks still queued in the broker
        session, or late) moves nothing: taken as ours, it would mark events acked that the cloud never
        stored, and they would not be sent again. One about ours past our head (a ledger restored from an
        older copy: the cloud has more of it) stops at the head."""
        if ledger and ledger != self.ledger.ledger_id:
            # Its clock too: it was sent before this ledger existed, maybe long ago.
            log.warning("ack for seq %d of ledger %s ignored: this machine's ledger is %s", seq, ledger,
                        self.ledger.ledger_id)
            return []
        self.heard(cloud_time, wallclock, now)
        if seq > self.ledger.head:
            log.error("cloud acks seq %d but the ledger ends at %d: is this the right ledger?", seq, self.ledger.head)
        if not self.ledger.set_acked(seq):
            return []
        self._progress(now)
        return self.due(now)

    def cloud_busy(self, now: float, wait_s: float = 0.0) -> None:
        """The cloud says our events reached it and wait in its queue: their ack is coming, so the resend
        timer starts again (without resetting the backoff: a cloud that says so and never acks is still
        resent to, less and less often). ``wait_s``, the cloud's estimate of that wait, holds the resend at
        least that long and a margin: a storm's queue is deeper than the timer, and each resend the timer
        made would be one more message behind the same queue."""
        if self.sent_upto > self.ledger.acked:
            self.last_progress = now
            self.hold_s = min(BUSY_HOLD_MAX_S, wait_s * BUSY_HOLD_FACTOR + BUSY_HOLD_MARGIN_S) if wait_s else 0.0

    def resend_from(self, seq: int, now: float) -> list[EventBatch]:
        """The cloud found a gap; it may even ask for events it once acked (a restored backup)."""
        self.sent_upto = min(self.sent_upto, seq - 1)
        return self.due(now)

    def tick(self, now: float) -> list[EventBatch]:
        """Time passes: with batches in flight and no ack within the timeout, send the first unacked batch
        again; the next timeout is twice as long (up to ``resend_max_s``, with jitter), and until an ack
        comes only that one batch is in flight, so a slow cloud gets one batch per machine, not a window."""
        acked = self.ledger.acked
        if self.sent_upto > acked and now - self.last_progress > max(self.timeout, self.hold_s):
            log.warning("no ack for %d s; resending from %d", now - self.last_progress, acked + 1)
            self.sent_upto = acked
            self.last_progress = now
            self.resends += 1
            self.hold_s = 0.0
            self.timeout = self._timeout()
            if self.resend_max_s > self.resend_after_s:
                self.in_flight_limit = 1
            return self.due(now)
        return []

    def due(self, now: float) -> list[EventBatch]:
        """The batches to publish now, in order: unacked events not yet sent, within the window.

        With ``coalesce``, a batch short of ``batch_size`` goes only when nothing is in flight: events
        written while an ack is awaited wait for it and then go together, so a busy cloud gets fewer,
        fuller batches (one message per event is what overloads it)."""
        acked = self.ledger.acked
        if self.sent_upto <= acked:
            self.last_progress = now  # nothing in flight: the resend timer starts with the next batch
        limit = self.in_flight_limit * self.batch_size
        # In flight: what was handed out above the mark, or above the point a resend request went back to
        # (below the mark: a restored backup), which counts those events as in flight again.
        base = min(acked, self.sent_upto)
        batches = []
        while self.sent_upto < self.ledger.head:
            pending = self.ledger.head - self.sent_upto
            if limit - (self.sent_upto - base) < min(self.batch_size, pending):
                break  # only whole batches, and never past the window
            if self.coalesce and self.sent_upto > base and pending < self.batch_size:
                break
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

    def __init__(self, every_s: float = 30.0, min_gap_s: float = 2.0, on_new_head: bool = True):
        self.every_s = every_s
        self.min_gap_s = min_gap_s
        # A status for every new head was most of the cloud's traffic; the events (and their acks) say it,
        # and the cloud takes the machine's head from them too. Off in the controller since issue 16.
        self.on_new_head = on_new_head
        self.next_at = 0.0
        self.head = 0  # the ledger head the last status told

    def due(self, head: int, now: float) -> bool:
        return now >= self.next_at or (self.on_new_head and head != self.head
                                       and now >= self.next_at - self.every_s + self.min_gap_s)

    def sent(self, head: int, now: float) -> None:
        self.head = head
        self.next_at = now + self.every_s
