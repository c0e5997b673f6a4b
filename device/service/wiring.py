"""The session's and the conversation client's configurations, built from settings."""
from __future__ import annotations

from device.audio.echo_control import EchoControlSettings
from device.service.settings import Settings
from device.session.config import SessionConfig
from device.session.conversation import ConversationSource


def conversation_source(settings: Settings) -> ConversationSource:
    """Where and how `atoms-appliance conversation` and the call-record saver fetch records."""
    assert settings.api_key is not None
    return ConversationSource(url=settings.url, api_key=settings.api_key.get_secret_value(),
                              auth=settings.auth)


def session_config(settings: Settings) -> SessionConfig:
    """What the session client needs from settings (the key in the clear: never logged)."""
    assert settings.api_key is not None
    return SessionConfig(
        url=settings.url, api_key=settings.api_key.get_secret_value(), agent_id=settings.agent_id,
        sample_rate=settings.sample_rate, variables=dict(settings.variables), auth=settings.auth,
        connect_timeout=settings.connect_timeout, ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout, backoff_initial=settings.backoff_initial,
        backoff_max=settings.backoff_max, max_message_bytes=settings.max_message_bytes)


def echo_control_settings(settings: Settings) -> EchoControlSettings:
    """The stages around the echo canceller (device/audio/echo_control.py)."""
    return EchoControlSettings(drift_ppm=settings.echo_drift_ppm, residual_echo=settings.residual_echo,
                               adaptive_half_duplex=settings.adaptive_half_duplex)
