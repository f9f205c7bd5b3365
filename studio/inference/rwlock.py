"""A readers-writer lock: many generations share a model while nobody changes it; attaching or removing an
adapter (which rewrites the model's modules) waits until they are done and runs alone."""
from __future__ import annotations

import threading
from contextlib import contextmanager


class ReadWriteLock:
    """Many readers at once, or one writer. A waiting writer holds back new readers, so a steady stream of
    generations cannot keep an adapter load waiting forever. Not re-entrant: never nest read() or write()."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self):
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
