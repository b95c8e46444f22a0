"""supervisord acts on a signal at once, not up to two seconds later.

supervisord's loop waits in poll() for at most a second and reads the signals it caught only
after that wait (Python restarts an interrupted poll, PEP 475), so a program that died was
restarted a whole second later (measured 1.01 s every time, with nothing else going on), and a
SIGTERM from `docker stop` began the shutdown a second late. The died program's restart is a
second pass of the loop: the pass that reaps it marks it EXITED, the next one starts it, after
another wait. The programs' first start, too, came after a first second-long wait.

Inside supervisord (set up by the guardian's factory, healthcheck/guardian.py), two entries in
the loop's socket map fix both: the read end of a pipe that Python's signal.set_wakeup_fd writes
a byte to at every signal, so poll() returns at once; and the write end, which asks poll() to
return at once for the next AFTER passes, while the loop reaps and starts what died (and for
the first passes, which start the programs). A few passes more per signal, never a busy loop.
"""

from __future__ import annotations

import os
import signal

AFTER = 2  # passes: one that reaps, one that starts again


class _End:
    """One end of the pipe, an entry of supervisord's socket map: the read end drains the signal
    bytes and asks for the next passes at once; the write end, always writable, has poll()
    return at once while passes are owed."""

    def __init__(self, fd: int, waker: Wakeup, reads: bool) -> None:
        self.fd, self._waker, self._reads = fd, waker, reads

    def readable(self) -> bool:
        return self._reads

    def writable(self) -> bool:
        return not self._reads and self._waker.passes > 0

    def handle_read_event(self) -> None:
        try:
            while os.read(self.fd, 512):
                pass
        except BlockingIOError:
            pass
        self._waker.passes = AFTER

    def handle_write_event(self) -> None:
        self._waker.passes -= 1

    def handle_error(self) -> None:
        pass  # nothing here can fail in a way supervisord should hear of


class Wakeup:
    def __init__(self) -> None:
        self.passes = AFTER  # supervisord starts its programs on its second pass: not a second late either
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.entries = {read_fd: _End(read_fd, self, reads=True), write_fd: _End(write_fd, self, reads=False)}
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def install(self, socket_map: dict) -> None:
        socket_map.update(self.entries)

    def remove(self, socket_map: dict) -> None:
        signal.set_wakeup_fd(-1)
        for fd, entry in self.entries.items():
            if socket_map.get(fd) is entry:
                del socket_map[fd]
            os.close(fd)


_wakeup: Wakeup | None = None


def wake_on_signals(supervisord) -> None:
    """Called by the guardian's factory, once per run of supervisord's loop. Before a reload
    (SIGHUP, `supervisorctl reload`) the pipe is taken out again: supervisord then closes every
    file descriptor it did not open, and a signal must not write into a number reused meanwhile.
    A shutdown keeps it, so that the programs' exits are seen at once."""
    global _wakeup
    from supervisor import events
    from supervisor.states import SupervisorStates

    socket_map = supervisord.options.get_socket_map()
    if _wakeup is None:
        _wakeup = Wakeup()
    _wakeup.install(socket_map)

    def before_reload(_event) -> None:
        global _wakeup
        if _wakeup is not None and supervisord.options.mood == SupervisorStates.RESTARTING:
            _wakeup.remove(socket_map)
            _wakeup = None

    events.subscribe(events.SupervisorStoppingEvent, before_reload)
