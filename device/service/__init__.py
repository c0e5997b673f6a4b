"""The running service: settings, the supervisor (main thread), control socket, systemd, state, stats, logs."""
