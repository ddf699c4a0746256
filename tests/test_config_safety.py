"""Hostile and broken site YAML: alias bombs, deep nesting, duplicate keys and grid codes, bad URLs,
binary and non-UTF-8 files -- each one clear error line with its path and line, via check-config too."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline import config_yaml
from pipeline.cli import app
from pipeline.config import load_config
from pipeline.config_errors import ConfigError, validate_bytes, validate_file, validate_text
from tests.test_config import GRID  # 11 lines

CAMERA = "cameras:\n  - {id: c1, url: x.mp4, grid: G1}\n"
runner = CliRunner()


def billion_laughs(levels: int = 9) -> str:
    """The classic alias bomb: 9 levels of 9 references expand to 9**9 (387 million) strings."""
    text = 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, levels):
        text += f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n"
    return text


def _errors(text: str) -> list[str]:
    cfg, errors = validate_text(text, "site.yaml")
    assert cfg is None and errors
    return errors


def test_billion_laughs_is_refused_before_anything_expands_it() -> None:
    errors = _errors(GRID + billion_laughs())
    assert len(errors) == 1, errors
    assert errors[0].startswith("site.yaml: refused: more than 1,000,000 nodes with aliases expanded"), errors


def test_recursive_alias_is_refused() -> None:
    assert _errors("grid: &g [*g]\n") == [
        "site.yaml: refused: an alias refers to a node that contains it (recursive structure) "
        "(line 1, column 7)"]


def test_too_many_aliases_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_yaml, "MAX_ALIASES", 3)
    text = GRID + "x: &x 1\ny: [*x, *x, *x, *x]\n"
    # The line is the anchor's: libyaml composes an alias into the anchored node itself.
    assert _errors(text) == ["site.yaml: refused: more than 3 aliases (*name) (line 12, column 4)"]


@pytest.mark.parametrize(("text", "message"), [
    ("grid: " + "[" * 100_000 + "]" * 100_000 + "\n", "exceeded maximum nesting depth (line 1, column 1006)"),
    ("grid: " + "[" * 100 + "]" * 100 + "\n", "refused: nested deeper than 64 levels"),
    ("grid:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)), "refused: nested deeper than 64 levels"),
    ("a: &a [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1 if i > 1 else ''}]\n" for i in range(1, 80)),
     "refused: nested deeper than 64 levels"),  # shallow as written, deep through aliases
])
def test_deep_nesting_is_refused_not_a_recursion_error(text: str, message: str) -> None:
    errors = _errors(text)
    assert len(errors) == 1 and message in errors[0], errors


def test_anchors_and_merge_keys_within_the_limits_still_work() -> None:
    text = GRID + (
        "cameras:\n"
        "  - &first {id: c1, url: x.mp4, grid: G1, decode: interval, max_fps: 3}\n"
        "  - {<<: *first, id: c2, url: y.mp4}\n")
    cfg, errors = validate_text(text)
    assert errors == [] and cfg is not None
    assert [(c.id, c.url, c.max_fps) for c in cfg.cameras] == [("c1", "x.mp4", 3.0), ("c2", "y.mp4", 3.0)]


def test_duplicate_keys_are_errors_with_both_lines() -> None:
    text = GRID + "mqtt:\n  topic_prefix: alerts-a\n  qos: 1\n  topic_prefix: alerts-b\n" + CAMERA + (
        "cameras:\n  - {id: c2, url: y.mp4, grid: G1, grid: G1}\n")
    errors = _errors(text)
    assert errors[:3] == [
        "mqtt.topic_prefix: duplicate key 'topic_prefix', first written at line 13 (line 15)",
        "cameras: duplicate key 'cameras', first written at line 16 (line 18)",
        "cameras[0].grid: duplicate key 'grid', first written at line 19 (line 19)",
    ], errors


def test_duplicate_keys_are_reported_with_other_errors() -> None:
    errors = _errors(GRID + "site: a\nsite: b\ncameras:\n  - {id: c1, url: x.mp4, grid: G7}\n")
    assert "site: duplicate key 'site', first written at line 12 (line 13)" in errors
    assert any(e.startswith("cameras[0].grid: 'G7' is not a level-4 grid cell code") for e in errors), errors


def test_duplicate_grid_cell_codes_are_errors() -> None:
    text = GRID + "              - {code: G1, name: Again}\n" + CAMERA
    assert _errors(text) == ["grid[0].children[0].children[0].children[1].code: duplicate grid cell code 'G1' "
                             "(first at grid[0].children[0].children[0].children[0]) (line 12)"]


def test_duplicate_cell_codes_under_different_communities_are_errors_too() -> None:
    text = GRID + "          - code: C2\n            name: Other\n            children:\n" \
                  "              - {code: G1, name: Same code}\n"
    errors = _errors(text)
    assert errors == ["grid[0].children[0].children[1].children[0].code: duplicate grid cell code 'G1' "
                      "(first at grid[0].children[0].children[0].children[0]) (line 15)"], errors


def test_same_upper_level_code_under_different_parents_is_fine_but_not_among_siblings() -> None:
    two_towns = GRID + ("  - code: T2\n    name: Other town\n    children:\n      - code: D1\n        name: D\n"
                        "        children:\n          - code: C9\n            name: C\n"
                        "            children:\n              - {code: G9, name: Cell}\n")
    cfg, errors = validate_text(two_towns)
    assert errors == [] and cfg is not None
    twin = two_towns.replace("code: T2", "code: T1")
    assert _errors(twin) == ["grid[1].code: duplicate town code 'T1' under the same parent (first at grid[0]) "
                             "(line 12)"]


@pytest.mark.parametrize(("url", "message"), [
    ('""', "cameras[0].url: must not be empty (an rtsp:// URL or a video file path) (line 13)"),
    ('"   "', "cameras[0].url: must not be empty"),
    ("ftp://cam.local/x", "cameras[0].url: 'ftp://cam.local/x': unknown scheme 'ftp'"),
    ("rtsp:///live", "cameras[0].url: 'rtsp:///live' has no host (line 13)"),
    ("rtsp://:554/live", "has no host"),
    ("http://cam.local:99999/v", "Port out of range"),
    ("'rtsp://cam.local/a b'", "contains white space"),
    ("file://", "names no file"),
])
def test_invalid_camera_urls_name_their_line(url: str, message: str) -> None:
    errors = _errors(GRID + f"cameras:\n  - {{id: c1, url: {url}, grid: G1}}\n")
    assert any(message in e for e in errors), errors


@pytest.mark.parametrize("url", ["rtsp://admin:pw@10.0.0.7:554/ch1", "udp://@239.0.0.1:1234", "udp://:1234",
                                 "clips/gate.mp4", "file:///data/gate.mp4", "https://cam/hls.m3u8"])
def test_valid_camera_urls_pass(url: str) -> None:
    cfg, errors = validate_text(GRID + f"cameras:\n  - {{id: c1, url: '{url}', grid: G1}}\n")
    assert errors == [] and cfg is not None and cfg.cameras[0].url == url


def test_camera_url_error_does_not_echo_the_password() -> None:
    errors = _errors(GRID + "cameras:\n  - {id: c1, url: 'rtspx://admin:Hunter22@cam/x', grid: G1}\n")
    assert errors == ["cameras[0].url: 'rtspx://***@cam/x': unknown scheme 'rtspx' (use one of rtsp, rtsps, "
                      "rtmp, rtmps, http, https, srt, udp, tcp, file://, or a file path) (line 13)"]


@pytest.mark.parametrize(("url", "message"), [
    ("amqp://gw:Hunter22@broker:5672", "mqtt.url: MQTT URL 'amqp://***@broker:5672': unknown scheme 'amqp'"),
    ("broker.local:1883", "needs a scheme"),
    ("mqtt://:Hunter22@/", "has no host"),
    ("mqtt://broker:70000", "Port out of range"),
    ("mqtt://broker/some/path", "has no path or query"),
])
def test_bad_mqtt_url_fails_check_config_without_the_password(tmp_path: Path, url: str, message: str) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(GRID + f"mqtt:\n  url: '{url}'\n")
    result = runner.invoke(app, ["check-config", str(site)])
    assert result.exit_code == 1, result.output
    assert message in result.output and "(line 13)" in result.output, result.output
    assert "Hunter22" not in result.output
    # The worker loads through the same validation: it stops with exit code 2, not a traceback.
    worker = runner.invoke(app, ["worker", "--config", str(site)])
    output = " ".join(worker.output.split())  # the console wraps long lines
    assert worker.exit_code == 2 and message in output and "Hunter22" not in output, output
    assert worker.exception is None or isinstance(worker.exception, SystemExit)


def test_mqtt_password_without_user_is_an_error() -> None:
    errors = _errors(GRID + "mqtt:\n  url: mqtt://broker\n  password: Hunter22\n")
    assert errors == ["mqtt: a broker password needs a user name (mqtt.username or user:password@ in mqtt.url) "
                      "(line 12)"]


@pytest.mark.parametrize(("content", "message"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file (NUL byte at offset 8, line 3), not YAML text"),
    (GRID.encode() + b"site: caf\xe9\n", "not UTF-8 text: byte 0xe9 at line 12, column 10 (save the file as UTF-8)"),
    ("grid: []\n".encode("utf-16"), "the file is UTF-16 text; save it as UTF-8"),
    (b"grid: []\nsite: \x07bell\n", "not valid YAML: character U+0007 is not allowed in YAML text (line 2)"),
])
def test_binary_and_non_utf8_files_are_one_clear_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(content)
    assert validate_file(path) == (None, [f"{path}: {message}"])
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.errors == [f"{path}: {message}"]
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_utf8_bom_is_accepted() -> None:
    cfg, errors = validate_bytes(b"\xef\xbb\xbf" + (GRID + CAMERA).encode())
    assert errors == [] and cfg is not None


def test_oversized_file_is_refused_without_reading_it_whole(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_yaml, "MAX_CONFIG_BYTES", 1024)
    path = tmp_path / "big.yaml"
    path.write_text(GRID + "cameras:\n" + "".join(f"  - {{id: c{i}, url: x.mp4, grid: G1}}\n" for i in range(100)))
    assert validate_file(path) == (None, [f"{path}: the file is larger than 0 MiB; a site config is text of "
                                          "at most a few hundred KiB"])


def test_multiple_documents_and_syntax_errors_keep_their_line() -> None:
    assert _errors(GRID + "---\ngrid: []\n")[0].startswith("site.yaml: not valid YAML: but found another document")
    assert _errors("grid: [\n")[0].startswith("site.yaml: not valid YAML:")


def test_demo_config_passes_all_new_checks() -> None:
    root = Path(__file__).resolve().parents[1]
    cfg, errors = validate_file(root / "configs" / "demo.yaml")
    assert errors == [] and cfg is not None


def test_camera_url_schemes_match_the_reader() -> None:
    from pipeline.config_checks import NETWORK_SCHEMES
    from pipeline.ingest.reader import NETWORK_SCHEMES as READER_SCHEMES

    assert tuple(f"{s}://" for s in NETWORK_SCHEMES) == READER_SCHEMES


@pytest.mark.parametrize(("text", "message"), [
    (GRID + billion_laughs(), "refused: more than 1,000,000 nodes with aliases expanded"),
    ("grid: " + "[" * 100_000 + "]" * 100_000 + "\n", "refused: nested deeper than 64 levels"),
    (GRID + "site: a\nsite: b\n", "site: duplicate key 'site', first written at line 12 (line 13)"),
])
def test_pure_python_loader_has_the_same_limits(monkeypatch: pytest.MonkeyPatch, text: str, message: str) -> None:
    """Where PyYAML was built without libyaml, the pure-Python composer must not recurse to death."""
    monkeypatch.setattr(yaml, "__with_libyaml__", False)
    errors = _errors(text)
    assert len(errors) == 1 and message in errors[0], errors
