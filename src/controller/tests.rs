//! Loop tests: the controller against the in-memory Docker daemon, with paused time.
