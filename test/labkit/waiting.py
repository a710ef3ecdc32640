"""Polling until something holds, the one helper the lab's modules share."""

import time


def until(predicate, timeout, interval=0.5, share=False):
    """Call ``predicate`` until it returns something true or ``timeout``
    seconds have passed (it is called once more at the end); return its
    last value. ``share``: between calls, wait at least as long as the
    call took (``pause``), for pollers inside an emulated VM."""
    deadline = time.monotonic() + timeout
    while True:
        polled = time.monotonic()
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        if share:
            pause(interval, polled)
        else:
            time.sleep(interval)


def pause(interval, poll_started):
    """Sleep ``interval``, or as long as the poll begun at ``poll_started``
    (time.monotonic()) took if that was longer: under emulation one look
    at three plutos costs seconds of the VM's only CPU, and polling back
    to back starved the plutos it watched (their IKE retransmits timed
    out). The watcher takes at most half the CPU."""
    time.sleep(max(interval, time.monotonic() - poll_started))
