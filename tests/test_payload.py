"""The writer's payload rules: truncation, redaction, repr fallback, recursion, NUL and bad UTF-8."""

from __future__ import annotations

import base64
import json

from cmbagent_events.config import CaptureConfig
from cmbagent_events.redaction import REDACTED
from cmbagent_events.writer.encode import Sanitizer, clean_str


def sanitizer() -> Sanitizer:
    return Sanitizer(CaptureConfig().secret_keys)


def test_long_strings_are_cut_with_original_length() -> None:
    out = clean_str("x" * 25_000, 10_000)
    assert out.startswith("x" * 10_000) and "25000 chars" in out and len(out) < 10_100


def test_secrets_are_redacted_at_any_depth_but_token_counts_are_not() -> None:
    value = {"llm_config": {"config_list": [{"model": "gpt-4", "api_key": "sk-live"}], "OPENAI_API_KEY": "sk-2"},
             "headers": {"Authorization": "Bearer x"}, "password": "hunter2", "access_token": "t",
             "usage": {"prompt_tokens": 5, "total_tokens": 9}, "tokens": 3}
    out = json.loads(sanitizer().encode_column([value], 1000)[0])
    assert out["llm_config"]["config_list"][0] == {"model": "gpt-4", "api_key": REDACTED}
    assert out["llm_config"]["OPENAI_API_KEY"] == REDACTED
    assert out["headers"]["Authorization"] == REDACTED and out["password"] == REDACTED
    assert out["access_token"] == REDACTED
    assert out["usage"] == {"prompt_tokens": 5, "total_tokens": 9} and out["tokens"] == 3


def test_non_json_values_become_repr_and_recursion_is_cut() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<Thing>"

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    loop: dict = {"name": "loop"}
    loop["self"] = loop
    deep: list = []
    cursor = deep
    for _ in range(100):
        cursor.append([])
        cursor = cursor[0]
    encoded = sanitizer().encode_column([{"thing": Thing(), "broken": Broken(), "loop": loop, "set": {1}, "deep": deep,
                                          "big": 1 << 80, "nan": float("nan"), 3: "int key", "b": b"\xff\x00ab"}],
                                        1000, user_code=True)[0]
    out = json.loads(encoded)
    assert out["thing"] == "<Thing>"
    assert out["broken"].startswith("<unrepresentable Broken")
    assert out["loop"]["self"] == "<recursion>"
    assert out["set"] == [1] and out["big"] == 1 << 80 and out["nan"] == "nan" and out["3"] == "int key"
    assert "max depth" in json.dumps(out["deep"])
    assert "\x00" not in encoded and base64.b64decode(out["b"]) == b"\xff\x00ab"


def test_nul_bytes_and_lone_surrogates_are_made_storable() -> None:
    out = clean_str("a\x00b\udcffc", 100)
    assert "\x00" not in out
    out.encode("utf-8")  # would raise on a lone surrogate
