"""atoms-appliance: a hands-free voice terminal for a Smallest AI Atoms voice agent."""

__version__ = "0.1.0"
