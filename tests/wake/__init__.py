"""Tests of the wake word detector (device/wake)."""
