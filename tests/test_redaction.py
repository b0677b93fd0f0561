"""Secrets are never stored: 28 planted in every form a run carries them (key names, key/value pairs,
JSON-string tool arguments, URLs, error messages, free text), on SQLite and PostgreSQL; and the rules
do not hide ordinary text."""

from __future__ import annotations

import json

from sqlalchemy import text

from cmbagent_events import capture_run
from cmbagent_events.redaction import REDACTED, redact_text

# Unique values, so each planted secret is found (or not) on its own.
AWS_ID = "AKIAIOSFODNN7EXAMPLE"
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
OPENAI = "sk-proj-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
PEM_BODY = "MIIEowIBAAKCAQEA7plantedPEMbodyLine1\nplantedPEMbodyLine2xyz"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"


def planted() -> dict[str, str]:
    """Name -> secret value; the values are what must never be stored."""
    names = ["cookie", "aws_secret_access_key", "private_key", "passphrase", "pwd", "access_key", "auth",
             "api_key", "password", "token", "secret", "authorization", "credentials",
             "url_message", "url_tool", "pair_list", "pair_dicts", "json_args_key", "json_args_cookie",
             "error_assign", "error_key", "failed_call", "code_output"]
    values = {name: f"planted{i:02d}Secret{i * 7919:06d}" for i, name in enumerate(names)}
    values.update({"free_openai": OPENAI, "free_bearer": JWT, "free_aws": AWS_ID, "free_github": GITHUB})
    values["free_pem"] = PEM_BODY.split("\n")[0]  # one line: stored text is compared through repr
    return values


async def _stored_text(session) -> str:
    """Every value of every row of the four tables, as one string."""
    out = []
    for table in ("workflow_runs", "execution_events", "messages", "files"):
        for row in (await session.execute(text(f"SELECT * FROM {table}"))).all():
            out.append(repr(tuple(row)))
    return "\n".join(out)


async def test_all_planted_secrets_are_redacted(db_url, db_session, config) -> None:
    s = planted()
    assert len(s) == 28
    async with capture_run(db_url, config=config, hooks=False, task_description=f"use key {s['free_openai']}",
                           meta={"api_key": s["api_key"]}) as run:
        call = run.capture_agent_call(
            "engineer", {"content": "hi", "cookie": s["cookie"]},
            context={"aws_secret_access_key": s["aws_secret_access_key"], "private_key": s["private_key"],
                     "passphrase": s["passphrase"], "pwd": s["pwd"]},
            metadata={"access_key": s["access_key"], "auth": s["auth"], "password": s["password"]})
        run.capture_agent_response("engineer", {"token": s["token"], "secret": s["secret"]}, event_id=call)
        run.capture_message("user", "engineer", f"connect to postgresql://admin:{s['url_message']}@db:5432/x")
        run.capture_message("engineer", "user", f"my key is {s['free_openai']}, header Bearer {s['free_bearer']}")
        run.capture_message("engineer", "user", f"aws {s['free_aws']} and github {s['free_github']} and\n{PEM}")
        run.capture_tool_call("engineer", "fetch",
                              {"url": f"https://bob:{s['url_tool']}@example.org/a",
                               "headers": [["Authorization", s["pair_list"]], ["Accept", "json"]],
                               "har": [{"name": "X-Api-Key", "value": s["pair_dicts"]}],
                               "authorization": s["authorization"], "credentials": s["credentials"]})
        run.capture_tool_call("engineer", "search", json.dumps({"query": "cmb", "api_key": s["json_args_key"]}))
        run.capture_tool_call("engineer", "get", json.dumps({"headers": {"Cookie": s["json_args_cookie"]}}),
                              result="ok")
        run.capture_error("engineer", f"login failed: password={s['error_assign']} rejected", "AuthError")
        run.capture_error("engineer", f"Incorrect API key provided: api_key: {s['error_key']}", "OpenAIError")
        failed = run.capture_agent_call("engineer", "try")
        run.finish_agent_call(failed, error=RuntimeError(f"secret={s['failed_call']}"))
        run.capture_code_execution("executor", "print(env)", result=f"GITHUB_TOKEN=x token={s['code_output']}",
                                   exit_code=0)
        assert await run.flush(30)
    stored = await _stored_text(db_session)
    leaked = sorted(name for name, value in s.items() if value in stored)
    assert leaked == [], f"{len(leaked)} of {len(s)} planted secrets stored in clear: {leaked}"
    assert stored.count(REDACTED) >= len(s)
    # what stays readable: the shape and the harmless parts
    assert "connect to postgresql://admin:***@db:5432/x" in stored
    assert "Accept" in stored and "cmb" in stored and "print(env)" in stored


def test_free_text_rules_hide_only_the_secret() -> None:
    assert redact_text(f"key {OPENAI} ok") == "key sk-*** ok"
    assert redact_text(f"Authorization: Bearer {JWT}") == "Authorization: Bearer ***"
    assert redact_text(f"id={AWS_ID}.") == "id=***."
    assert redact_text(f"x {GITHUB}") == "x ghp_***"
    assert redact_text(f"before\n{PEM}\nafter") == "before\n-----BEGIN RSA PRIVATE KEY-----***\nafter"
    assert redact_text("redis://:pw123456@cache:6379") == "redis://:***@cache:6379"
    assert redact_text('{"password": "hunter2"}') == '{"password": "***"}'


def test_ordinary_text_is_left_alone() -> None:
    for plain in ("task-1234567890abcdefghijkl done", "see https://example.org/a@b", "max_tokens: 512",
                  "asian cuisine", "the basic idea", "x = compute(y)", "user@example.org wrote: hello",
                  "prompt_tokens=12 completion_tokens=30"):
        assert redact_text(plain) == plain, plain


def test_the_prefilter_sees_every_marker_and_key_word() -> None:
    """A value the batch prefilter keeps unexamined must hold no marker of any free-text shape and no
    word a key rule could match: the prefilter (generated from redaction.py) must find each of them,
    in any case, with - . or space as separator."""
    from cmbagent_events.config import CaptureConfig
    from cmbagent_events.redaction import TEXT_MARKERS, key_words
    from cmbagent_events.writer.encode import TEXT_PREFILTER, Sanitizer

    clean = Sanitizer(CaptureConfig().secret_keys)
    for marker in TEXT_MARKERS:
        for variant in (marker, marker.upper(), marker.replace("_", "-")):
            assert TEXT_PREFILTER.holds(f"x {variant} y".encode()), variant
            assert clean.prefilter.flagged([b"plain", f'"x {variant} y"'.encode(), b"plain"]) == {1}, variant
    for word in key_words(clean.is_secret_key.names):
        for spelled in (word.replace("_", "-").upper(), word.replace("_", " ").title(), word.replace("_", ".")):
            found = clean.prefilter.found(f"x {spelled} y".encode())
            assert not clean.prefilter.key_hits.isdisjoint(found), spelled  # a key word: the exact path
            assert clean.prefilter.flagged([b"plain", f'"x {spelled} y"'.encode(), b"plain"]) == {1}, spelled


def test_the_batch_scan_flags_exactly_the_values_the_per_value_check_would() -> None:
    """Prefilter.flagged searches the whole batch at once (one automaton pass, matches not
    overlapping): it must flag a value exactly when that value alone holds a word."""
    import random

    from cmbagent_events.config import CaptureConfig
    from cmbagent_events.writer.encode import Sanitizer

    prefilter = Sanitizer(CaptureConfig().secret_keys).prefilter
    pieces = [*(w.decode() for w in prefilter.words), 'tokens"', "tokens",
              "pass", "ke", "a", "s", '"', "x", "-", "g", ":/", "plain words ", "TOKEN", "Api", "_", "hp", "gh", "sk"]
    rng = random.Random(7)
    for _ in range(3_000):
        chunks = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))).encode()
                  for _ in range(rng.randint(1, 12))]
        expected = {i for i, chunk in enumerate(chunks) if prefilter.holds(chunk)}
        assert prefilter.flagged(chunks) == expected, chunks


def test_every_secret_word_counts_where_the_one_table_says() -> None:
    """SECRET_WORDS is the one list: each word hides a key holding it (or ending with it) through
    the writer's generated prefilter, and an assignment of it in free text, with no other edit."""
    import json

    from cmbagent_events.redaction import ASSIGNED, FRAGMENT, SECRET_WORDS, SUFFIX, SecretKeys
    from cmbagent_events.writer.encode import Sanitizer

    keys, clean = SecretKeys(()), Sanitizer(())  # no configured names: the words alone
    for word, where in SECRET_WORDS.items():
        if where & (FRAGMENT | SUFFIX):
            key = f"x{word}" if where & SUFFIX else f"My-{word.upper()}-value"
            assert keys(key), key
            assert json.loads(clean.encode_column([{key: "v4lue", "plain": 1}], 1000)[0]) == {key: "***", "plain": 1}
        if where & ASSIGNED:
            for spelled in {word, word.replace("_", "-")}:
                assert redact_text(f"use {spelled.upper()}=hunter2x now") == f"use {spelled.upper()}=*** now", spelled
