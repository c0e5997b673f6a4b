"""The local Atoms agent simulator (`atoms-appliance sim`): the Atoms cloud's stand-in for the demo
and the tests. See `device.sim.server` for the server and `device.sim.options` for its options."""
from device.sim.options import SimOptions
from device.sim.server import Simulator, SimulatorError, main

__all__ = ["SimOptions", "Simulator", "SimulatorError", "main"]
