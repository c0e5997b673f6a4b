"""Hardware abstraction for atoms-appliance: one interface per resource, real drivers and fakes.

`device/` never imports `alsaaudio` or `gpiozero`; it asks this package for a backend by name
(`hw.registry.audio_backend`, `hw.registry.controls_backend`) and talks to the interfaces in `hw.audio` and `hw.controls`.
"""
