"""The core of the application: events and actions, the pure state machine, the thread base, backoff.

Nothing here does I/O or imports a driver; everything else in `device` builds on it.
"""
