"""Tests of the deployment files: systemd units, installer, hardware profiles, sd_notify."""
