"""Debug recordings: the ring buffers of the audio streams (recorder) and the thread that writes them (dumper)."""
