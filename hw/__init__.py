"""Hardware abstraction for atoms-appliance: one interface per resource, real drivers and fakes.

`device/` never imports `alsaaudio` or `gpiozero`; it asks this package for a backend by name
(`open_audio`, `open_controls`) and talks to the interfaces in `hw.audio` and `hw.controls`.
"""
