"""Waiting precisely: the output thread's wait until a due time, keeping the GIL for the
last stretch, and its timer slack."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import sys
import time


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class PreciseSleep:
    """Waits until an absolute time.monotonic() value while keeping the GIL.

    Why keep the GIL: a thread that sleeps with the GIL released needs it back to send, and
    a busy Python thread hands it over only after the switch interval. So the output thread
    asks for the GIL `spin_ms` before the due time and keeps it until it has sent. Keeping
    it takes care: a thread that has waited for the GIL one switch interval makes the
    holder drop it at its next bytecode boundary, which could be right at the due time. So
    the wait is cut into native sleeps (clock_nanosleep through ctypes.PyDLL, which keeps
    the GIL) shorter than the switch interval, with a zero sleep between them: releasing
    the GIL and taking it straight back restarts a waiting thread's clock. With spin_ms
    about 1.6 switch intervals, a thread that took the GIL after a busy thread's interval
    sends without any such handover. Other Python threads wait at most `spin_ms` per
    message; ONNX Runtime inference does not need the GIL. Without clock_nanosleep
    (macOS) the pieces are spun.
    """

    CLOCK_MONOTONIC = 1
    TIMER_ABSTIME = 1

    def __init__(self) -> None:
        self._nanosleep = None
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6")
                nanosleep = libc.clock_nanosleep
            except (OSError, AttributeError):
                return
            nanosleep.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Timespec),
                                  ctypes.c_void_p]
            nanosleep.restype = ctypes.c_int
            self._nanosleep = nanosleep
            self._when = _Timespec()
            self._when_ref = ctypes.pointer(self._when)

    def until(self, t: float) -> None:
        monotonic = time.monotonic
        # A thread that started waiting for the GIL when this one took it asks for it
        # back one switch interval later; each piece ends before that.
        piece = sys.getswitchinterval() * 0.8
        while True:
            now = monotonic()
            if now >= t:
                return
            if t - now > piece:
                self._hold_until(now + piece)
                time.sleep(0)  # release and retake the GIL: restarts waiters' clocks
            else:
                self._hold_until(t)
                return

    def _hold_until(self, t: float) -> None:
        if self._nanosleep is None:
            while time.monotonic() < t:
                pass
            return
        seconds = int(t)
        self._when.tv_sec = seconds
        self._when.tv_nsec = int((t - seconds) * 1e9)
        while self._nanosleep(self.CLOCK_MONOTONIC, self.TIMER_ABSTIME, self._when_ref,
                              None) == errno.EINTR:
            pass


def thread_timer_slack(nanoseconds: int) -> None:
    """Linux rounds a sleeping thread's wake-up up to its timer slack (50 µs by default);
    the output thread wants its wake-ups where it asked."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(29, nanoseconds, 0, 0, 0)  # PR_SET_TIMERSLACK
