"""recordInfo answers kept in process memory, so a client polling a task that has not changed
costs no database round trip.

An entry is dropped when the task changes: every statement that changes what recordInfo
shows announces the task after its commit (TASK_CHANGED, see app.db.hooks), and the
notifier carries that to every process through Redis. A read that was under way while the
task changed does not store what it read: `begin` before reading, `put` refuses an answer
older than the task's last change seen here. An entry also expires after `ttl_s`, which
bounds what a lost announcement (a Redis outage) or a change from a process without Redis
can leave stale.

A queued task's answer holds its place in the queue, which moves when a task ahead of it
leaves the queue (it starts, fails or is canceled): a change that does not touch the task
itself. Every such departure is announced too, so any announced change drops every queued
answer (new tasks queue behind, and move no one). A queued answer is kept only if nothing at
all changed while it was read.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.hooks import announce_after_commit

TASK_CHANGED = "task_changed"
# The longest a board of the queue's head serves places with no change announced.
QUEUE_BOARD_SECONDS = 2.0


def task_changed_after_commit(session: AsyncSession, *task_ids: str) -> None:
    """Announce, once the transaction commits, that these tasks changed what recordInfo shows
    of them. Every statement that changes a task's row or its callback state calls it."""
    for task_id in task_ids:
        announce_after_commit(session, TASK_CHANGED, task_id)


@dataclass(frozen=True)
class CachedView:
    """A serialised recordInfo answer and its ETag."""

    key_id: str
    body: bytes
    etag: str
    expires_at: float  # time.monotonic()
    queued: bool = False  # it shows a place in the queue

    @classmethod
    def of(cls, key_id: str, body: bytes, *, ttl_s: float, queued: bool = False) -> CachedView:
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        return cls(key_id, body, etag, time.monotonic() + ttl_s, queued)


class TaskViewCache:
    def __init__(self, *, ttl_s: float, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        # task id -> (answer, the change count when it was kept)
        self._views: OrderedDict[str, tuple[CachedView, int]] = OrderedDict()
        # The change counter when each task last changed, for the tasks changed lately; a
        # task forgotten here changed no later than `_forgotten`.
        self._clock = 0
        self._changed: OrderedDict[str, int] = OrderedDict()
        self._forgotten = 0
        self._board: QueueBoard | None = None
        self._board_reading = False

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    def get(self, task_id: str, key_id: str) -> CachedView | None:
        kept = self._views.get(task_id)
        if kept is None:
            return None
        view, clock = kept
        # A queued answer lasts until anything changes (its place may have moved).
        if time.monotonic() >= view.expires_at or (view.queued and clock != self._clock):
            del self._views[task_id]
            return None
        if view.key_id != key_id:
            return None
        self._views.move_to_end(task_id)
        return view

    def begin(self) -> int:
        """A mark to take before reading a task for `put`."""
        return self._clock

    def put(self, task_id: str, view: CachedView, *, since: int) -> None:
        """Keep `view`, read after `since` (begin()), unless the task changed meanwhile (for
        a queued answer: unless anything did)."""
        changed = self._clock if view.queued else self._changed.get(task_id, self._forgotten)
        if changed > since or self._ttl_s <= 0:
            return
        self._views[task_id] = (view, since)
        self._views.move_to_end(task_id)
        while len(self._views) > self._max:
            self._views.popitem(last=False)

    def queue_board(self) -> QueueBoard | None:
        """The board of the queue's head, while nothing changed since it was read (and for
        QUEUE_BOARD_SECONDS at most, which bounds what a lost announcement leaves stale)."""
        board = self._board
        if board is None or board.clock != self._clock:
            return None
        if time.monotonic() - board.taken_at >= QUEUE_BOARD_SECONDS:
            return None
        return board

    def claim_board_read(self) -> bool:
        """Whether this caller reads the board now: one read at a time, and the others count
        their own place meanwhile rather than all reading the same rows."""
        if self._board_reading:
            return False
        self._board_reading = True
        return True

    def release_board_read(self) -> None:
        self._board_reading = False

    def keep_board(
        self, heads: list[tuple[int, str]], *, since: int, cap: int
    ) -> QueueBoard | None:
        """The board from the queue's head read after `since` (begin()), in pickup order;
        None, and nothing kept, when anything changed meanwhile."""
        if self._clock != since:
            return None
        places = {task_id: place for place, (_due, task_id) in enumerate(heads, start=1)}
        last = heads[-1] if heads else None
        self._board = QueueBoard(since, time.monotonic(), places, last, cap)
        return self._board

    def changed(self, task_id: str) -> None:
        """The task changed (here or in another process): forget its answer, and the places
        in the queue every queued answer shows."""
        self._clock += 1
        self._views.pop(task_id, None)
        self._changed[task_id] = self._clock
        self._changed.move_to_end(task_id)
        while len(self._changed) > self._max:
            _task, when = self._changed.popitem(last=False)
            self._forgotten = max(self._forgotten, when)

    def changed_all(self) -> None:
        """Anything may have changed (announcements were lost): forget every answer, and keep
        no read under way (every task counts as changed just now; the board goes with the
        change counter)."""
        self._clock += 1
        self._views.clear()
        self._changed.clear()
        self._forgotten = self._clock


@dataclass(frozen=True)
class QueueBoard:
    """The head of the queue as one read saw it: the first `cap` queued tasks in pickup order
    (due_at, id), so a queued task's place costs no count in the database while nothing
    leaves the queue. Kept by TaskViewCache under the same change counter as queued answers:
    any announced change drops it, and new tasks queue behind it and move no one.
    """

    clock: int  # the change counter it was read at
    taken_at: float  # time.monotonic()
    places: dict[str, int]  # task id -> place (1 is next)
    last: tuple[int, str] | None  # the (due_at, id) of its last task
    cap: int

    def place(self, task_id: str, due_at: int) -> int | None:
        """The task's place; `cap` when it queues behind a full board; None when the board
        cannot tell (the task queued after the board was read, ahead of its end or behind a
        board that was not full)."""
        place = self.places.get(task_id)
        if place is not None:
            return place
        full = len(self.places) >= self.cap - 1
        if full and self.last is not None and (due_at, task_id) > self.last:
            return self.cap
        return None
