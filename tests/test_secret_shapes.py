"""Every shape of redaction.SHAPES, and every default secret key name, hidden wherever it is planted
(message content, tool-argument JSON, tool result, error message, code, task description, run meta),
on SQLite and PostgreSQL, with and without an ``İ`` (which ``str.lower`` lengthens) in the string;
and the scan stays linear on adversarial input."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from cmbagent_events import capture_run
from cmbagent_events.config import CaptureConfig
from cmbagent_events.redaction import MARGIN, SHAPES, SecretKeys, redact_text, secret_spans
from cmbagent_events.writer.encode import TEXT_PREFILTER, Sanitizer

A36 = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"  # 36 mixed alnum
HEX = "0123456789abcdef"

# shape name -> (text holding the secret, the secret: what must not be stored)
SAMPLES: dict[str, tuple[str, str]] = {
    "pem_private_key": ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n"
                        "-----END OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAA"),
    "auth_scheme": ("Authorization: Bearer Zm9vYmFyYmF6cXV4MTIz", "Zm9vYmFyYmF6cXV4MTIz"),
    "assignment": ("export PRIVATE_KEY=MIIBVQplantedKey42 now", "MIIBVQplantedKey42"),
    "token_assignment": ("config token=tk9plantedValue77", "tk9plantedValue77"),
    "cli_password": ("run psql --password hunter2planted -h db", "hunter2planted"),
    "mysql_password": ("mysql -u root -pS3cr3tPlanted mydb", "S3cr3tPlanted"),
    "netrc": ("machine api.example.org login bob password netrcPlanted9", "netrcPlanted9"),
    "url_password": ("postgresql://admin:p@ssPlanted@db.example.org:5432/x", "p@ssPlanted"),
    "azure_key": ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=bXlBenVyZUtleVBsYW50ZWQ=;"
                  "EndpointSuffix=core.windows.net", "bXlBenVyZUtleVBsYW50ZWQ="),
    "azure_sas": ("https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sr=b&sig=abcDEF123%2Bplanted%3D&se=x",
                  "abcDEF123%2Bplanted%3D"),
    "jwt": ("token is eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.c2lnUGxhbnRlZA ok",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.c2lnUGxhbnRlZA"),
    "slack_webhook": ("post to https://hooks.slack.com/services/T0PLANTED/B0PLANTED/xYzPlanted123456",
                      "T0PLANTED/B0PLANTED/xYzPlanted123456"),
    "telegram_bot": ("bot 123456789:AAH" + "x" * 32 + " set", "AAH" + "x" * 32),
    "openai_style": ("key sk-proj-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2 ok", "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2"),
    "stripe": ("stripe sk_live_" + A36[:24] + " and rk_live_" + A36[4:28], A36[:24]),
    "aws_access_key_id": ("aws AKIAIOSFODNN7PLANTED ok", "AKIAIOSFODNN7PLANTED"),
    "google_api_key": ("gemini AIza" + "Sy" + A36[:33] + " ok", "AIzaSy" + A36[:33]),
    "google_oauth": ("ya29.a0AfH6SMplantedGoogleToken123", "a0AfH6SMplantedGoogleToken123"),
    "github": ("git ghp_" + A36 + " ok", A36),
    "gitlab": ("glpat-" + "Ab3_-x" * 4 + " ok", "Ab3_-x" * 4),
    "slack_token": ("xoxb-1234567890-planted-slack", "1234567890-planted-slack"),
    "huggingface": ("hf_" + A36[:34] + " ok", A36[:34]),
    "npm": ("//registry.npmjs.org/:_authToken=npm_" + A36, A36),
    "pypi": ("pypi-AgEIcHlwaS5vcmc" + "Q" * 60, "AgEIcHlwaS5vcmc" + "Q" * 60),
    "sendgrid": ("SG." + "a" * 22 + "." + "B" * 43, "a" * 22 + "." + "B" * 43),
    "docker": ("dckr_pat_" + A36[:27], A36[:27]),
    "groq": ("gsk_" + A36 + A36[:16], A36 + A36[:16]),
    "replicate": ("r8_" + A36[:37], A36[:37]),
    "perplexity": ("pplx-" + A36 + A36[:12], A36 + A36[:12]),
    "xai": ("xai-" + A36 * 2 + A36[:8], A36 * 2 + A36[:8]),
    "age": ("AGE-SECRET-KEY-1" + "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L" + "Q" * 26,
            "AGE-SECRET-KEY-1" + "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L" + "Q" * 26),
    "shopify": ("shpat_" + HEX * 2, HEX * 2),
    "databricks": ("dapi" + HEX * 2, HEX * 2),
    "digitalocean": ("dop_v1_" + HEX * 4, HEX * 4),
    "vault": ("hvs." + A36, A36),
    "doppler": ("dp.pt." + A36 + "abcdefgh", A36 + "abcdefgh"),
    "postman": ("PMAK-" + HEX + HEX[:8] + "-" + HEX * 2 + "ab", HEX + HEX[:8] + "-" + HEX * 2 + "ab"),
    "new_relic": ("NRAK-" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ0", "ABCDEFGHIJKLMNOPQRSTUVWXYZ0"),
    "grafana": ("glc_" + A36 + "+/x=", A36 + "+/x="),
    "sentry": ("sntryu_" + HEX * 4, HEX * 4),
    "linear": ("lin_api_" + A36 + "wxyz", A36 + "wxyz"),
    "atlassian": ("ATATT3" + "xF" * 60, "ATATT3" + "xF" * 60),
    "pulumi": ("pul-" + HEX * 2 + HEX[:8], HEX * 2 + HEX[:8]),
    "square": ("sq0atp-" + A36[:22], A36[:22]),
}
# the list: headers and other forms that go through the generic shapes
EXTRA: dict[str, tuple[str, str]] = {
    "ocp_apim_header": ("Ocp-Apim-Subscription-Key: ocpPlanted0123456789", "ocpPlanted0123456789"),
    "x_auth_key_header": ("X-Auth-Key: xauthPlanted98765", "xauthPlanted98765"),
    "password_upper": ("PASSWORD=UpperPlanted55", "UpperPlanted55"),
    "sk_test": ("sk_test_" + A36[:26], A36[:26]),
    "netrc_lines": ("machine h\n  login u\n  password netrcLines77", "netrcLines77"),
}
ALL = {**SAMPLES, **EXTRA}
DOTTED_I = "\u0130"  # İ: str.lower makes it two characters


def test_every_shape_has_a_sample() -> None:
    assert sorted(SAMPLES) == sorted(shape.name for shape in SHAPES)


@pytest.mark.parametrize("dotted", [False, True], ids=["plain", "dotted-I"])
@pytest.mark.parametrize("name", sorted(ALL))
def test_each_shape_is_hidden_in_free_text(name: str, dotted: bool) -> None:
    sample, secret = ALL[name]
    value = f"{DOTTED_I} note: {sample} {DOTTED_I}" if dotted else f"note: {sample}"
    out = redact_text(value)
    assert secret not in out, out
    assert "***" in out
    assert TEXT_PREFILTER.holds(value.encode()), "the text prefilter must see it"


@pytest.mark.parametrize("name", sorted(ALL))
def test_each_shape_is_hidden_by_the_writer_in_json_and_text_columns(name: str) -> None:
    sample, secret = ALL[name]
    clean = Sanitizer(CaptureConfig().secret_keys)
    value = f"{DOTTED_I} {sample}"
    encoded = clean.encode_column([{"arguments": json.dumps({"q": value})}, {"result": value}, "plain"], 10_000)
    assert secret not in encoded[0] and secret not in encoded[1], encoded
    assert encoded[2] == '"plain"'
    texts = clean.text_column([value, "hello"], 10_000)
    assert secret not in texts[0] and texts[1] == "hello"


def test_default_key_names_are_hidden_and_near_misses_are_not() -> None:
    keys = SecretKeys(CaptureConfig().secret_keys)
    for name in ("sig", "jwt", "dsn", "pin", "otp", "sessionid", "Ocp-Apim-Subscription-Key", "X-Auth-Key",
                 "PIN", "x.auth.key", "AccountKey", "client_secret", "refresh_token"):
        assert keys(name), name
    for name in ("session_id", "mapping", "typing", "signal", "design", "dsn_count", "prompt_tokens", "tokens",
                 "pinned", "otp_enabled", "spin"):
        assert not keys(name), name
    clean = Sanitizer(CaptureConfig().secret_keys)
    out = json.loads(clean.encode_column([{"sig": "s1gPlanted", "jwt": "j", "dsn": "d", "pin": "1234", "otp": "9",
                                           "sessionid": "abc", "Ocp-Apim-Subscription-Key": "k", "X-Auth-Key": "x",
                                           "session_id": "default", "mapping": "m"}], 10_000)[0])
    assert out.pop("session_id") == "default" and out.pop("mapping") == "m"
    assert set(out.values()) == {"***"}


def test_dotted_i_cannot_switch_a_rule_off() -> None:
    for sample in ("AKIAIOSFODNN7EXAMPLE", "Bearer Zm9vYmFyYmF6cXV4", "PASSWORD=hunter2x",
                   "-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----"):
        for text_ in (f"{DOTTED_I} {sample}", f"{sample} {DOTTED_I * 3}", f"{DOTTED_I}x: {sample}"):
            spans = secret_spans(text_)
            assert spans, text_
            assert all(text_[b:e] in sample for b, e in spans)


def test_a_secret_split_by_the_cut_is_still_hidden() -> None:
    secret = "AKIAIOSFODNN7EXAMPLE"
    for cut in range(1, len(secret)):
        value = "x " * 50 + secret + " tail" * 1000
        keep = 100 + cut
        out = redact_text(value, keep)
        assert len(out) <= keep + len("***") and secret[:cut + 1] not in out and "AKIA" not in out, (cut, out)
    long = "y" * (MARGIN * 3)
    assert redact_text(f"password={long}", 20) == "password=***"


def test_adversarial_repetition_is_hidden_and_bounded() -> None:
    """5 MB of ``password=`` repeated: redacted, and only the kept part plus the margin is scanned
    (no timing: the result, whose length proves the cut came first)."""
    value = "password=" * (5_000_000 // 9)
    out = Sanitizer(CaptureConfig().secret_keys).text_column([value], 10_000)[0]
    assert out.startswith("password=***") and "5000000 chars" not in out and out.endswith("chars in all]")
    assert "password=password" not in out
    assert len(out) < 200


def _stored(rows: list) -> str:
    return "\n".join(repr(tuple(row)) for row in rows)


async def test_all_shapes_planted_everywhere_are_hidden_on_both_databases(db_url, db_session, config) -> None:
    planted = {f"{name}{'-I' if dotted else ''}": (f"{DOTTED_I} {sample}" if dotted else sample, secret)
               for name, (sample, secret) in ALL.items() for dotted in (False, True)}
    task = " | ".join(sample for sample, _ in planted.values())
    async with capture_run(db_url, config=config, hooks=False, task_description=task,
                           meta={name: {"note": sample} for name, (sample, _) in planted.items()}) as run:
        for sample, _ in planted.values():
            run.capture_message("engineer", "user", f"here: {sample}")
            run.capture_tool_call("engineer", "fetch", json.dumps({"query": sample, "n": 1}), result=f"got {sample}")
            run.capture_error("engineer", f"failed with {sample}", "RuntimeError")
            run.capture_code_execution("executor", f"print('{sample}')", result=sample, exit_code=0)
        assert await run.flush(60)
    rows = []
    for table in ("workflow_runs", "execution_events", "messages"):
        rows += (await db_session.execute(text(f"SELECT * FROM {table}"))).all()
    stored = _stored(rows)
    leaked = sorted(name for name, (_, secret) in planted.items() if secret in stored or repr(secret)[1:-1] in stored)
    assert leaked == [], f"{len(leaked)} of {len(planted)} planted secrets stored in clear: {leaked}"
    assert "here: " in stored and "RuntimeError" in stored


async def test_a_5_mb_adversarial_message_is_cut_and_scanned_on_the_writers_thread(sqlite_url, config,
                                                                                     monkeypatch) -> None:
    """The caller's capture call only queues the message; the cut and the scan run on the writer's thread
    (asserted by the thread each scan ran on, not by a timing), and what is stored is redacted and cut."""
    import threading

    from cmbagent_events.writer import encode as encode_module

    threads: set[int] = set()
    original = encode_module.redact_text

    def watched(value, *args):
        threads.add(threading.get_ident())
        return original(value, *args)

    monkeypatch.setattr(encode_module, "redact_text", watched)
    value = "password=" * (5_000_000 // 9)
    async with capture_run(sqlite_url, config=config, hooks=False) as run:
        assert run.capture_message("engineer", "user", value)
        assert await run.flush(60)
    assert threads and threading.get_ident() not in threads  # scanned, and never on the caller's thread
    import sqlite3

    con = sqlite3.connect(sqlite_url.split(":///", 1)[1])
    try:
        (content,) = con.execute("SELECT content FROM messages").fetchone()
    finally:
        con.close()
    assert content.startswith("password=***") and len(content) < 200
