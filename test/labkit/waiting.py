"""Polling until something holds, the one helper the lab's modules share."""

import time


def until(predicate, timeout, interval=0.5):
    """Call ``predicate`` until it returns something true or ``timeout``
    seconds have passed (it is called once more at the end); return its
    last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
