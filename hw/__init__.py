"""Hardware abstraction for atoms-appliance: one interface per resource, real drivers and fakes.

`device/` never imports `alsaaudio` or `gpiozero`; it asks this package for the backends its
settings name (`hw.registry.audio_backend_from_settings`, `hw.registry.controls_from_settings`;
the fields they read are the Protocols in `hw.settings`) and talks to the interfaces in `hw.audio`
and `hw.controls`.
"""
