"""Tests of the capture DSP chain (echo cancellation, noise suppression, resampling, recording)."""
