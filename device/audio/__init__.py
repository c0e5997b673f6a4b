"""The audio path: formats, the capture and playback threads, buffers, the DSP chain, earcons."""
