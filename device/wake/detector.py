"""The wake word detector: 16 kHz PCM16 in, a `WakeDetection` out when the model's probability
crosses the cutoff.

pymicro-wakeword does the work: `MicroWakeWordFeatures` (the microfrontend: a 40-band spectrogram
every 10 ms) and `MicroWakeWord` (a streaming TensorFlow Lite model, stepped every `stride`
feature windows, averaged over the model's `sliding_window_size` outputs). Its wheel ships the
four builtin models and `libtensorflowlite_c`, so nothing is downloaded at run time.

What this module adds around the library:
- models by name or by a custom file (.tflite with its .json beside it, or the .json), with the
  cutoff taken from the model's json unless a setting overrides it;
- a load that cannot crash the process: the library passes whatever `TfLiteModelCreateFromFile`
  returns (NULL for a file that is not a model) straight on to the interpreter, which segfaults,
  so the file is opened and checked through the same C API first (`_check_model`), and every
  failure is one `WakeWordUnavailable` line naming the platform;
- a refractory time, kept on the audio's own clock (the time of each 10 ms feature window,
  derived from `now` and the audio not yet consumed), so how the caller splits the audio does not
  change what is detected or when.
"""
from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from device.audio.formats import BYTES_PER_SAMPLE, DSP_RATE, FRAME_SAMPLES

if TYPE_CHECKING:
    from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures

# The builtin models, as pymicro-wakeword names them (its `Model` enum and models/<name>.json).
BUILTIN_MODELS: Final[tuple[str, ...]] = ("okay_nabu", "hey_jarvis", "alexa", "hey_mycroft")
DEFAULT_MODEL: Final = "okay_nabu"
DEFAULT_REFRACTORY_S: Final = 2.0
# The microfrontend's output: 40 features per window, one window per 10 ms of audio.
FEATURES_PER_WINDOW: Final = 40
FEATURE_STEP_MS: Final = 10
_QUANTIZED_TYPES: Final = (3, 9)   # kTfLiteUInt8, kTfLiteInt8: the types the library can feed


@dataclass(frozen=True)
class WakeDetection:
    """One detection: which model fired and the probability that crossed the cutoff (0-1).

    Made on the capture thread by `WakeWordDetector.process`; immutable, so it may be handed to
    any thread.
    """

    model: str
    score: float


class WakeWordUnavailable(Exception):
    """The wake word runtime or model cannot load here. `str()` is one line naming the platform
    (machine and OS) and the cause, fit for a log line and a config error (exit 78)."""

    def __init__(self, cause: str) -> None:
        cause = " ".join(str(cause).split())   # one line, whatever the cause's text held
        super().__init__(f"wake word detection is unavailable on {platform_name()}: {cause}")


def platform_name() -> str:
    """`aarch64 Linux (glibc 2.36)`-style: what decides whether pymicro-wakeword has a wheel."""
    libc, version = platform.libc_ver()
    libc_part = f" ({libc} {version})" if libc and version else ""
    return f"{platform.machine() or 'unknown machine'} {platform.system() or sys.platform}{libc_part}"


@dataclass(frozen=True)
class ModelConfig:
    """A microWakeWord model's files and parameters, read from its json."""

    name: str
    wake_word: str
    tflite: Path
    probability_cutoff: float
    sliding_window_size: int
    trained_languages: tuple[str, ...]


def _runtime() -> Any:
    """The pymicro_wakeword module, or WakeWordUnavailable when it is not installed or will not import."""
    try:
        import pymicro_wakeword
    except ImportError as exc:
        raise WakeWordUnavailable(
            f"pymicro-wakeword is not installed ({exc}); its wheels cover Linux x86_64 and aarch64 "
            "with glibc >= 2.35 (Debian 12 or newer)") from exc
    return pymicro_wakeword


def _tflite_library(runtime: Any) -> Path:
    # The wheel's layout (pymicro_wakeword/lib/libtensorflowlite_c.*), as `from_config` looks it up.
    lib_dir = Path(runtime.__file__).parent / "lib"
    found = sorted(lib_dir.glob("*tensorflowlite_c.*"))
    if not found:
        raise WakeWordUnavailable(f"no tensorflowlite_c library in {lib_dir} (no wheel for this platform?)")
    return found[0]


def _builtin_json(runtime: Any, model: str) -> Path:
    if model not in BUILTIN_MODELS:
        raise WakeWordUnavailable(f"unknown wake word model {model!r}: builtin models are "
                                  f"{', '.join(BUILTIN_MODELS)}, or give a model file")
    return Path(runtime.__file__).parent / "models" / f"{model}.json"


def read_model_config(path: Path) -> ModelConfig:
    """The model at `path`: a .json (its "model" entry names the .tflite beside it) or a .tflite
    with a .json of the same name beside it. WakeWordUnavailable names what is wrong."""
    if path.suffix == ".tflite":
        json_path, tflite = path.with_suffix(".json"), path
    else:
        json_path, tflite = path, None
    try:
        config = json.loads(json_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WakeWordUnavailable(f"cannot read the wake word model config {json_path}: {exc.strerror or exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise WakeWordUnavailable(f"{json_path} is not a microWakeWord model config (bad JSON: {exc})") from exc
    try:
        micro = config["micro"]
        cutoff = float(micro["probability_cutoff"])
        window = int(micro["sliding_window_size"])
        step = int(micro.get("feature_step_size", FEATURE_STEP_MS))
        tflite = tflite or json_path.parent / str(config["model"])
        wake_word = str(config.get("wake_word", tflite.stem))
        languages = tuple(str(x) for x in config.get("trained_languages", []))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise WakeWordUnavailable(f"{json_path} is not a microWakeWord model config "
                                  f"(needs \"model\" and \"micro\": {{\"probability_cutoff\", "
                                  f"\"sliding_window_size\"}}; problem: {exc!r})") from exc
    if step != FEATURE_STEP_MS:
        raise WakeWordUnavailable(f"{json_path}: feature_step_size {step} ms is not supported (only 10 ms)")
    if window < 1 or not 0.0 < cutoff < 1.0:
        raise WakeWordUnavailable(f"{json_path}: sliding_window_size {window} or probability_cutoff {cutoff} "
                                  "out of range (>= 1; between 0 and 1)")
    return ModelConfig(tflite.stem, wake_word, tflite, cutoff, window, languages)


def _check_model(runtime: Any, library: Path, tflite: Path) -> None:
    """Open the model through the TFLite C API and let it go again, raising WakeWordUnavailable
    where the library itself would crash (it does not check the NULL of a bad file)."""
    if not tflite.is_file():
        raise WakeWordUnavailable(f"wake word model file {tflite} does not exist")
    try:
        lib = runtime.wakeword.TfLiteWakeWord(library).lib
    except OSError as exc:
        raise WakeWordUnavailable(f"cannot load the TensorFlow Lite runtime {library.name}: {exc}") from exc
    model = lib.TfLiteModelCreateFromFile(str(tflite.resolve()).encode())
    if not model:
        raise WakeWordUnavailable(f"{tflite} is not a TensorFlow Lite model")
    interpreter = lib.TfLiteInterpreterCreate(model, None)
    try:
        if not interpreter or lib.TfLiteInterpreterAllocateTensors(interpreter) != 0:
            raise WakeWordUnavailable(f"{tflite}: the TensorFlow Lite runtime cannot run this model")
        tensor = lib.TfLiteInterpreterGetInputTensor(interpreter, 0)
        stride = lib.TfLiteTensorDim(tensor, 1)
        if (lib.TfLiteTensorType(tensor) not in _QUANTIZED_TYPES or stride < 1
                or lib.TfLiteTensorByteSize(tensor) != stride * FEATURES_PER_WINDOW):
            raise WakeWordUnavailable(f"{tflite} is not a quantized streaming microWakeWord model "
                                      f"(input: {stride} x {FEATURES_PER_WINDOW} int8 features expected)")
        output = lib.TfLiteInterpreterGetOutputTensor(interpreter, 0)
        if lib.TfLiteTensorType(output) not in _QUANTIZED_TYPES or lib.TfLiteTensorByteSize(output) != 1:
            raise WakeWordUnavailable(f"{tflite} does not output one quantized probability")
    except RuntimeError as exc:   # the library's NULL check on tensor look-ups
        raise WakeWordUnavailable(f"{tflite}: {exc}") from exc
    finally:
        if interpreter:
            lib.TfLiteInterpreterDelete(interpreter)
        lib.TfLiteModelDelete(model)


class WakeWordDetector:
    """Listens for one wake word in a stream of 16 kHz mono PCM16.

    Role: the wake word call mode's detector. It owns a pymicro-wakeword model and its feature
    frontend (both stateful: the model is a streaming network) and the refractory time after a
    detection. Thread: the capture thread calls `process` with each processed mic frame while the
    device listens for the wake word, and `reset` when listening starts again (a call ended, mute
    lifted); nothing else touches it, so it has no lock. Construction loads the runtime and the
    model (tens of ms) and raises `WakeWordUnavailable` if either cannot load.
    """

    sample_rate: Final[int] = DSP_RATE

    def __init__(self, model: str = DEFAULT_MODEL, model_file: Path | None = None, cutoff: float | None = None,
                 refractory_s: float = DEFAULT_REFRACTORY_S) -> None:
        if cutoff is not None and not 0.0 < cutoff < 1.0:
            raise ValueError(f"wake word cutoff {cutoff} must be between 0 and 1")
        if refractory_s < 0:
            raise ValueError(f"wake word refractory time {refractory_s} s must not be negative")
        runtime = _runtime()
        library = _tflite_library(runtime)
        config = read_model_config(Path(model_file) if model_file is not None else _builtin_json(runtime, model))
        _check_model(runtime, library, config.tflite)
        self.config = config
        self.model = config.name
        self.cutoff = config.probability_cutoff if cutoff is None else cutoff
        self.refractory_s = refractory_s
        try:
            self._model: MicroWakeWord = runtime.MicroWakeWord(
                config.name, wake_word=config.wake_word, tflite_model=config.tflite,
                probability_cutoff=self.cutoff, sliding_window_size=config.sliding_window_size,
                trained_languages=list(config.trained_languages), libtensorflowlite_c_path=library)
            self._features: MicroWakeWordFeatures = runtime.MicroWakeWordFeatures()
        except (OSError, ValueError, RuntimeError) as exc:
            raise WakeWordUnavailable(f"{config.tflite}: {exc}") from exc
        self._samples_in = 0           # samples given to the frontend since the last reset
        self._windows_out = 0          # feature windows it produced since then
        self._last_detection: float | None = None
        self.last_score = 0.0          # the latest averaged probability the model gave (diagnostics)

    def process(self, pcm: bytes, now: float) -> WakeDetection | None:
        """Feed `pcm` (16 kHz mono PCM16, any even length; split and buffered internally); `now` is
        the monotonic time at the end of `pcm`. Returns the first detection in it, if any.

        A window counts when its averaged probability exceeds the cutoff and the previous detection
        is at least `refractory_s` older, both times being those of the audio itself.
        """
        if len(pcm) % BYTES_PER_SAMPLE:
            raise ValueError(f"{len(pcm)} bytes is not whole PCM16 samples")
        self._samples_in += len(pcm) // BYTES_PER_SAMPLE
        found: WakeDetection | None = None
        for features in self._features.process_streaming(pcm):
            self._windows_out += 1
            probability = self._model.process_streaming_prob(features)
            # The model runs once every `stride` windows; in between the library answers 0.0.
            if probability is None or self._windows_out % self._model.stride:
                continue
            self.last_score = probability
            if probability <= self.cutoff:
                continue
            # The window's own time: `now`, less the audio after it still waiting in the frontend.
            at = now - (self._samples_in - self._windows_out * FRAME_SAMPLES) / DSP_RATE
            if self._last_detection is not None and at - self._last_detection < self.refractory_s:
                continue
            self._last_detection = at
            if found is None:
                found = WakeDetection(self.model, float(probability))
        return found

    def reset(self) -> None:
        """Forget the streaming state (frontend buffer, model state, averaged probabilities), as
        when the audio before was never heard. The refractory time is kept: it is about the room."""
        self._features.reset()
        self._model.reset()
        self._samples_in = self._windows_out = 0
        self.last_score = 0.0

    def close(self) -> None:
        """Release the native interpreter. Idempotent; `process` must not be called after it."""
        self._model.close()
