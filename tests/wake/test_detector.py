"""The wake word detector (device/wake/detector.py) on real models and recordings: every builtin
loads and hears its own wake word, a custom model file loads from either of its files, a bad model
or a missing runtime is one `WakeWordUnavailable` line naming the platform, the refractory time
holds, the way the audio is split does not change the result, and silence wakes nothing.

Detection rates and false accepts over hours of audio are measured by `make bench`
(tools/bench_wake.py), not here.
"""
from __future__ import annotations

import json
import platform
import shutil
import sys
from pathlib import Path

import pytest

from device.wake import BUILTIN_MODELS, WakeDetection, WakeWordDetector, WakeWordUnavailable
from tools import wake_audio

pymicro_wakeword = pytest.importorskip("pymicro_wakeword")
MODELS_DIR = Path(pymicro_wakeword.__file__).parent / "models"
needs_espeak = pytest.mark.skipif(not wake_audio.espeak_available(), reason="espeak-ng is not installed")


def two_words(model: str, gap_s: float) -> bytes:
    """Recording 1 of `model`'s wake word, `gap_s` of silence, recording 2."""
    return wake_audio.pad(wake_audio.recording(model, 1), 0.5, gap_s) + wake_audio.pad(wake_audio.recording(model, 2), 0, 1.5)


def assert_one_line_naming_the_platform(exc: WakeWordUnavailable, *parts: str) -> None:
    text = str(exc)
    assert "\n" not in text
    assert platform.machine() in text and platform.system() in text
    for part in parts:
        assert part in text, (part, text)


# -- loading -----------------------------------------------------------------------------------------
def test_the_builtin_names_are_the_packages_own() -> None:
    assert set(BUILTIN_MODELS) == {m.value for m in pymicro_wakeword.Model}


@pytest.mark.parametrize("model", BUILTIN_MODELS)
def test_each_builtin_loads_with_its_own_cutoff_and_hears_its_wake_word(model: str) -> None:
    detector = WakeWordDetector(model)
    own = json.loads((MODELS_DIR / f"{model}.json").read_text())["micro"]["probability_cutoff"]
    assert (detector.model, detector.cutoff, detector.sample_rate) == (model, own, 16000)
    found = wake_audio.scan(detector, wake_audio.pad(wake_audio.recording(model, 1)))
    assert len(found.detections) == 1
    assert found.detections[0][1] > detector.cutoff


@pytest.mark.parametrize("model", BUILTIN_MODELS)
def test_a_builtin_does_not_answer_the_other_wake_words(model: str) -> None:
    detector = WakeWordDetector(model)
    for other in BUILTIN_MODELS:
        if other != model:
            detector.reset()
            assert wake_audio.scan(detector, wake_audio.pad(wake_audio.recording(other, 1))).detections == ()


@needs_espeak
def test_the_generated_phrase_the_call_mode_tests_use_wakes_okay_nabu() -> None:
    found = wake_audio.scan(WakeWordDetector("okay_nabu"), wake_audio.pad(wake_audio.wake_phrase("okay_nabu")))
    assert len(found.detections) == 1


def copy_model(tmp_path: Path, name: str, builtin: str = "okay_nabu") -> tuple[Path, Path]:
    """The builtin's files as a custom model `name` (.tflite and .json, the json pointing at it)."""
    tflite, config = tmp_path / f"{name}.tflite", tmp_path / f"{name}.json"
    shutil.copyfile(MODELS_DIR / f"{builtin}.tflite", tflite)
    data = json.loads((MODELS_DIR / f"{builtin}.json").read_text())
    data["model"] = tflite.name
    config.write_text(json.dumps(data))
    return tflite, config


@pytest.mark.parametrize("given", ["tflite", "json"])
def test_a_custom_model_loads_from_either_file(tmp_path: Path, given: str) -> None:
    tflite, config = copy_model(tmp_path, "kitchen")
    detector = WakeWordDetector(model_file=tflite if given == "tflite" else config)
    assert detector.model == "kitchen"
    assert detector.config.tflite == tflite
    assert detector.cutoff == json.loads(config.read_text())["micro"]["probability_cutoff"]
    found = wake_audio.scan(detector, wake_audio.pad(wake_audio.recording("okay_nabu", 1)))
    assert [d[1] > detector.cutoff for d in found.detections] == [True]


def test_a_given_tflite_is_the_one_loaded_whatever_its_json_names(tmp_path: Path) -> None:
    tflite, config = copy_model(tmp_path, "porch", builtin="alexa")
    data = json.loads(config.read_text())
    data["model"] = "somewhere_else.tflite"
    config.write_text(json.dumps(data))
    detector = WakeWordDetector(model_file=tflite)
    assert len(wake_audio.scan(detector, wake_audio.pad(wake_audio.recording("alexa", 1))).detections) == 1


def test_the_cutoff_setting_overrides_the_models_own(tmp_path: Path) -> None:
    word = wake_audio.pad(wake_audio.recording("okay_nabu", 1))
    default = wake_audio.scan(WakeWordDetector("okay_nabu"), word).detections
    detector = WakeWordDetector("okay_nabu", cutoff=0.5)
    assert detector.cutoff == 0.5
    found = wake_audio.scan(detector, word).detections
    assert len(found) == 1 and found[0][1] > 0.5
    assert found[0][0] < default[0][0] and found[0][1] < default[0][1]   # crossed 0.5 before 0.85
    with pytest.raises(ValueError, match="cutoff"):
        WakeWordDetector("okay_nabu", cutoff=1.5)


def test_a_missing_model_file_is_unavailable_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tflite"
    with pytest.raises(WakeWordUnavailable) as info:
        WakeWordDetector(model_file=missing)
    assert_one_line_naming_the_platform(info.value, str(tmp_path / "nope.json"))


def test_a_json_naming_a_missing_tflite_is_unavailable(tmp_path: Path) -> None:
    tflite, config = copy_model(tmp_path, "gone")
    tflite.unlink()
    with pytest.raises(WakeWordUnavailable) as info:
        WakeWordDetector(model_file=config)
    assert_one_line_naming_the_platform(info.value, str(tflite), "does not exist")


@pytest.mark.parametrize("content", [b"not a model at all\n" * 50, b"\x1c\x00\x00\x00TFL3" + bytes(500)])
def test_a_file_that_is_not_a_model_is_unavailable_not_a_crash(tmp_path: Path, content: bytes) -> None:
    # pymicro-wakeword alone segfaults on these (it hands a NULL model to the interpreter).
    tflite, _ = copy_model(tmp_path, "junk")
    tflite.write_bytes(content)
    with pytest.raises(WakeWordUnavailable) as info:
        WakeWordDetector(model_file=tflite)
    assert_one_line_naming_the_platform(info.value, str(tflite))


@pytest.mark.parametrize("config_text", ["{not json", '{"model": "x.tflite"}', '{"micro": {}}', "[1, 2]",
                                         '{"model": "x.tflite", "micro": {"probability_cutoff": 0.5, '
                                         '"sliding_window_size": 5, "feature_step_size": 20}}'])
def test_a_bad_model_config_is_unavailable_in_one_line(tmp_path: Path, config_text: str) -> None:
    config = tmp_path / "bad.json"
    config.write_text(config_text)
    with pytest.raises(WakeWordUnavailable) as info:
        WakeWordDetector(model_file=config)
    assert_one_line_naming_the_platform(info.value, str(config))


def test_an_unknown_builtin_is_unavailable_and_lists_the_builtins() -> None:
    with pytest.raises(WakeWordUnavailable) as info:
        WakeWordDetector("hey_toaster")
    assert_one_line_naming_the_platform(info.value, "hey_toaster", *BUILTIN_MODELS)


def test_without_the_runtime_it_is_unavailable_naming_the_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymicro_wakeword", None)   # what `import` sees with no wheel
    with pytest.raises(WakeWordUnavailable) as info:
        WakeWordDetector()
    assert_one_line_naming_the_platform(info.value, "pymicro-wakeword")


# -- streaming ---------------------------------------------------------------------------------------
def test_silence_and_quiet_noise_wake_nothing() -> None:
    detector = WakeWordDetector("okay_nabu")
    quiet = wake_audio.silence(30)
    found = wake_audio.scan(detector, quiet + wake_audio.add_noise(quiet, -60, seed=1))
    assert found.detections == ()
    assert found.peak < 0.1


def test_the_refractory_time_swallows_a_second_word_inside_it() -> None:
    pcm = two_words("okay_nabu", gap_s=0.5)
    assert len(wake_audio.scan(WakeWordDetector("okay_nabu", refractory_s=30), pcm).detections) == 1
    found = wake_audio.scan(WakeWordDetector("okay_nabu", refractory_s=2), pcm)
    assert len(found.detections) == 2
    assert found.detections[1][0] - found.detections[0][0] >= 2


def test_the_refractory_time_outlives_a_reset() -> None:
    detector = WakeWordDetector("okay_nabu", refractory_s=10)
    word = wake_audio.pad(wake_audio.recording("okay_nabu", 1))
    first = wake_audio.scan(detector, word, start=100)
    assert len(first.detections) == 1
    detector.reset()
    assert wake_audio.scan(detector, word, start=100 + len(word) / 32000).detections == ()  # < 10 s later
    detector.reset()
    assert len(wake_audio.scan(detector, word, start=200).detections) == 1


def test_reset_forgets_the_stream_so_the_same_audio_scores_the_same() -> None:
    detector = WakeWordDetector("hey_jarvis", refractory_s=0)
    word = wake_audio.pad(wake_audio.recording("hey_jarvis", 2))

    def heard(found: wake_audio.Scan) -> list[tuple[float, float]]:
        return [(round(at, 6), score) for at, score in found.detections]

    first = heard(wake_audio.scan(detector, word))
    assert first
    wake_audio.scan(detector, word[: len(word) // 4 * 2], start=100)    # half a stream, then forgotten
    detector.reset()
    assert heard(wake_audio.scan(detector, word, start=200)) == first
    assert heard(wake_audio.scan(WakeWordDetector("hey_jarvis", refractory_s=0), word)) == first


@pytest.mark.parametrize("chunk_bytes", [2, 322, 7 * 320 + 2, 16000])
def test_how_the_audio_is_split_does_not_change_what_is_heard(chunk_bytes: int) -> None:
    pcm = two_words("hey_mycroft", gap_s=3)
    reference = wake_audio.scan(WakeWordDetector("hey_mycroft"), pcm)
    assert len(reference.detections) == 2
    found = wake_audio.scan(WakeWordDetector("hey_mycroft"), pcm, chunk_bytes=chunk_bytes)
    assert [s for _, s in found.detections] == [s for _, s in reference.detections]
    for (at, _), (at_ref, _) in zip(found.detections, reference.detections, strict=True):
        assert at_ref <= at < at_ref + chunk_bytes / 32000 + 0.01   # reported by the piece holding it


def test_a_detection_is_the_model_and_the_score_that_crossed() -> None:
    detector = WakeWordDetector("alexa")
    pcm = wake_audio.pad(wake_audio.recording("alexa", 1))
    results = [detector.process(pcm[i:i + 320], i / 32000) for i in range(0, len(pcm), 320)]
    hits = [r for r in results if r is not None]
    assert len(hits) == 1
    assert isinstance(hits[0], WakeDetection) and hits[0].model == "alexa" and hits[0].score > detector.cutoff


def test_odd_byte_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="whole PCM16 samples"):
        WakeWordDetector().process(b"\x00\x01\x02", 0.0)
