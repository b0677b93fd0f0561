"""Finding secrets: by key name, and in free text. What counts as a secret is written here once:
``SECRET_WORDS`` (the words, and where each counts) and ``DEFAULT_SECRET_KEYS`` (the configurable
whole key names) for key names and assignments, ``SHAPES`` for free text; the writer's batch
prefilter (writer/encode.py) is generated from them (:func:`key_words`, ``TEXT_MARKERS``).

Key names: a key is secret when, its ASCII letters lower-cased and ``-``, ``.`` and spaces read as
``_``, it is one of the configured names (``CaptureConfig.secret_keys``), contains one of
``KEY_FRAGMENTS`` or ends with one of ``KEY_SUFFIXES`` (``token``: ``tokens``, the usage counts, is
not secret). A configured name is matched whole: ``pin`` hides ``{"pin": ...}``, not ``{"mapping": ...}``.

Free text (message content, error messages, every string of a payload): each shape of ``SHAPES``
starts at one of its literal markers. All markers are found in one pass (an Aho-Corasick automaton,
``ahocorasick-rs``, in Rust) over a lower-cased copy of the same length (no character outside ASCII
can move positions or switch a rule off); one anchored regex match at a marker decides. Every regex
is linear: each run in it is bounded, no two runs can share a character, and a marker inside the
previous match of its rule is skipped, so ``password=`` repeated a million times costs one pass
and one regex match per 1,024 characters. Callers scan at most what they store plus ``MARGIN``
characters (``redact_text(value, keep)``), so a 50 MB message costs what 10 KB does.

The shapes were written from the token formats that maintained scanners document (gitleaks' rules,
Yelp's detect-secrets plugins): vendor prefixes, lengths and alphabets, plus the assignment, header,
command-line and URL forms in which any password travels.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable
from functools import cache
from typing import NamedTuple

from ahocorasick_rs import AhoCorasick, BytesAhoCorasick, Implementation

REDACTED = "***"
MARGIN = 1024  # characters past a cut still scanned, so a secret cut in half is still found

# -- key names ------------------------------------------------------------------------------------
FRAGMENT = 1  # a key name holding the word is secret
SUFFIX = 2  # a key name ending with the word is secret
ASSIGNED = 4  # in free text, ``word = value`` / ``word: value`` hides the value (the "assignment" shape)

# Every secret word and where it counts: a new word is one line here.
SECRET_WORDS: dict[str, int] = {
    "password": FRAGMENT | ASSIGNED, "passwd": FRAGMENT | ASSIGNED, "passphrase": FRAGMENT | ASSIGNED,
    "secret": FRAGMENT | ASSIGNED, "credential": FRAGMENT, "api_key": FRAGMENT | ASSIGNED,
    "apikey": FRAGMENT | ASSIGNED, "private_key": FRAGMENT | ASSIGNED, "privatekey": FRAGMENT | ASSIGNED,
    "access_key": FRAGMENT | ASSIGNED, "accesskey": FRAGMENT | ASSIGNED, "account_key": FRAGMENT,
    "accountkey": FRAGMENT, "subscription_key": FRAGMENT | ASSIGNED, "auth_key": FRAGMENT | ASSIGNED,
    "authkey": FRAGMENT, "cookie": FRAGMENT, "authoriz": FRAGMENT,
    "_pwd": SUFFIX, "_auth": SUFFIX, "_key_id": SUFFIX, "token": SUFFIX,
    "pwd": ASSIGNED, "access_token": ASSIGNED, "auth_token": ASSIGNED, "sessionid": ASSIGNED,
}
KEY_FRAGMENTS = tuple(word for word, where in SECRET_WORDS.items() if where & FRAGMENT)
KEY_SUFFIXES = tuple(word for word, where in SECRET_WORDS.items() if where & SUFFIX)

# Matched whole. ``session_id`` is not here: AG2, MARS and CMBAgent use it for a conversation's
# identifier (and so do we, in our own column); ``sessionid`` (the web framework cookie) is.
DEFAULT_SECRET_KEYS = ("api_key", "apikey", "password", "passwd", "pwd", "passphrase", "token", "secret",
                       "authorization", "auth", "credential", "credentials", "cookie", "set_cookie",
                       "private_key", "access_key", "secret_key", "aws_secret_access_key", "session_token",
                       "sig", "jwt", "dsn", "pin", "otp", "sessionid", "ocp_apim_subscription_key", "x_auth_key")



def fold(value: str) -> str:
    """``value`` lower-cased at the same length, so positions in it are positions in ``value``
    (``str.lower`` makes ``İ`` two characters, the only one it lengthens)."""
    low = value.lower()
    return low if len(low) == len(value) else value.replace("\u0130", "i").lower()


def normalize_key(key: str) -> str:
    """A key name as the rules read it: lower case, ``-``, ``.`` and spaces as ``_``."""
    return fold(key).replace("-", "_").replace(" ", "_").replace(".", "_")


class SecretKeys:
    """Decides whether a mapping key names a secret (cached per key)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(map(normalize_key, names))
        self._cache: dict[str, bool] = {}

    def __call__(self, key: str) -> bool:
        hit = self._cache.get(key)
        if hit is None:
            norm = normalize_key(key)
            hit = (norm in self.names or norm.endswith(KEY_SUFFIXES)
                   or any(fragment in norm for fragment in KEY_FRAGMENTS))
            if len(self._cache) < 65_536:
                self._cache[key] = hit
        return hit


def key_words(names: Iterable[str]) -> set[str]:
    """What a JSON text must hold for a key rule to find a secret key in it, with ``names`` (the
    normalized configured names): each name between quotes, each fragment, each suffix before its
    closing quote (the writer's prefilter is built from these)."""
    return {*(f'"{name}"' for name in names), *KEY_FRAGMENTS, *(f'{suffix}"' for suffix in KEY_SUFFIXES)}


# -- free text ------------------------------------------------------------------------------------
class Shape(NamedTuple):
    """One form of secret in free text: found at ``markers`` (lower case), confirmed by ``regex``
    matched at the marker; the regex's ``secret`` group is what is hidden."""

    name: str
    markers: tuple[str, ...]
    regex: re.Pattern[str]
    note: str
    boundary: bool = True  # the marker must not continue a word (``task-`` is no ``sk-``)


def _shape(name: str, markers: str, regex: str, note: str, boundary: bool = True, flags: int = 0) -> Shape:
    return Shape(name, tuple(markers.split()), re.compile(regex, re.ASCII | flags), note, boundary)


_B64URL = r"[A-Za-z0-9_\-]"
_SEP = r"""["']?\s{0,8}[=:]\s{0,8}["']?"""  # between a key word and its value: = or :, quotes, spaces
_VALUE = r"""[^\s,;&'"<>]{1,1024}"""  # an assigned value: up to a separator, a quote or a space
# words whose assigned value is secret, with an optional _suffix (secret_key, password_hash)
# the assigned words, each "_" also written "-" (Ocp-Apim-Subscription-Key, X-Auth-Key)
_ASSIGN_WORDS = tuple(dict.fromkeys(spelled for word, where in SECRET_WORDS.items() if where & ASSIGNED
                                    for spelled in (word, word.replace("_", "-"))))
_CLI_WORDS = ("--password", "--passwd", "--passphrase", "--pass", "--token", "--api-key", "--api_key", "--secret",
              "--client-secret", "--auth-token", "--access-token")
_GITLAB = ("pat", "ptt", "dt", "rt", "soat", "cbt", "imt", "ft", "oas", "agent")

SHAPES: tuple[Shape, ...] = (
    # generic forms: any password or key, wherever it is written
    _shape("pem_private_key", "-----begin",
           r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
           r"(?P<secret>.*?(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\Z))",
           "PEM private key block (RSA, EC, DSA, OPENSSH, PGP, PKCS#8, encrypted), to its END line or the end",
           False, re.DOTALL),
    _shape("auth_scheme", "bearer basic token",
           r"(?i:bearer|basic|token)\s{1,8}(?P<secret>[A-Za-z0-9\-._~+/]{8,4096}=*)",
           "HTTP credentials after an auth scheme word: Bearer / Basic / Token (8+ chars)"),
    _shape("assignment", " ".join(_ASSIGN_WORDS),
           rf"(?i:{'|'.join(map(re.escape, _ASSIGN_WORDS))})(?:[_\-][A-Za-z0-9_\-]{{0,30}})?{_SEP}(?P<secret>{_VALUE})",
           "key = value / key: value / \"key\": \"value\" for password, secret, api key, private key, access "
           "key, subscription key (Ocp-Apim-Subscription-Key), X-Auth-Key, sessionid; PRIVATE_KEY=, "
           "AccountKey= (Azure) and DB_PASSWORD= included", False),
    _shape("token_assignment", "token", rf"(?i:token){_SEP}(?P<secret>[^\s,;&'\"<>]{{8,1024}})",
           "token = value with 8+ chars (token: 512 is a count)", False),
    _shape("cli_password", "--pass --token --api-key --api_key --secret --client-secret --auth-token --access-token",
           rf"(?i:{'|'.join(map(re.escape, _CLI_WORDS))})(?:=|\s{{1,8}})[\"']?(?P<secret>[^\s'\"]{{1,256}})",
           "command-line flags: --password hunter2, --token=..., --api-key ..."),
    _shape("mysql_password", "mysql mariadb",
           r"(?i:mysql|mariadb)[^\n]{0,256}?\s-p(?P<secret>[^\s'\"]{1,256})",
           "mysql / mysqldump / mariadb command lines: -pPASSWORD (the password glued to -p)"),
    _shape("netrc", "login", r"(?i:login)\s{1,16}\S{1,256}\s{1,16}(?i:password)\s{1,16}(?P<secret>\S{1,256})",
           ".netrc entries: machine HOST login USER password PASS (also on several lines)"),
    _shape("url_password", "://", r"://[^\s/:@\"'<>]{0,256}:(?P<secret>[^\s/\"'<>]{1,256})@",
           "a URL's userinfo password, scheme://user:PASS@host; a password holding @ ends at the last @",
           False),
    _shape("azure_key", "accountkey sharedaccesskey",
           r"(?i:accountkey|sharedaccesskey)\s{0,8}=\s{0,8}(?P<secret>[A-Za-z0-9+/=]{8,1024})",
           "Azure connection strings: AccountKey= (storage), SharedAccessKey= (Service Bus, Event Hubs)",
           False),
    _shape("azure_sas", "sig=", r"(?i:sig)=(?P<secret>[A-Za-z0-9%+/=_\-]{16,512})",
           "Azure SAS token signature, sig= in a URL's query (URL-encoded base64)"),
    _shape("jwt", "eyj", rf"(?P<secret>eyJ{_B64URL}{{8,4096}}\.{_B64URL}{{2,8192}}\.{_B64URL}{{0,4096}})",
           "JSON Web Token: base64url header (eyJ...) . payload . signature"),
    _shape("slack_webhook", "hooks.slack.com/",
           r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9_/+\-]{8,255})",
           "Slack incoming webhook URL: hooks.slack.com/services/T.../B.../...", False),
    _shape("telegram_bot", ":aa", rf"(?<=[0-9]{{5}}):(?P<secret>AA{_B64URL}{{33}})(?!{_B64URL})",
           "Telegram bot token: bot id (kept), colon, 35 chars starting AA", False),
    # vendor tokens: a documented prefix, then the token's own alphabet and length
    _shape("openai_style", "sk-", r"sk-(?P<secret>[A-Za-z0-9][A-Za-z0-9_\-]{15,255})",
           "sk-... keys: OpenAI (sk-proj-), Anthropic (sk-ant-), DeepSeek, OpenRouter (sk-or-v1-)"),
    _shape("stripe", "sk_live_ sk_test_ rk_live_ rk_test_ whsec_",
           r"(?:[sr]k_(?:live|test)|whsec)_(?P<secret>[A-Za-z0-9]{10,247})",
           "Stripe secret (sk_live_) and restricted (rk_live_) keys, test keys, webhook secrets (whsec_)"),
    _shape("aws_access_key_id", "akia asia abia acca a3t",
           r"(?P<secret>(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16})(?![A-Za-z0-9])",
           "AWS access key id: AKIA / ASIA (temporary) / ABIA / ACCA / A3T. + 16 upper-case alnum"),
    _shape("google_api_key", "aiza", rf"(?P<secret>AIza{_B64URL}{{35}})(?!{_B64URL})",
           "Google API key: AIza + 35 chars (Gemini, Maps, Firebase)"),
    _shape("google_oauth", "ya29.", rf"ya29\.(?P<secret>{_B64URL}{{20,2048}})", "Google OAuth access token: ya29."),
    _shape("github", "ghp_ gho_ ghu_ ghs_ ghr_ github_pat_",
           r"(?:gh[pousr]|github_pat)_(?P<secret>[A-Za-z0-9_]{20,255})",
           "GitHub tokens: classic (ghp_), OAuth (gho_), user/server (ghu_, ghs_), refresh (ghr_), fine-grained"),
    _shape("gitlab", " ".join(f"gl{kind}-" for kind in _GITLAB),
           rf"gl(?:{'|'.join(_GITLAB)})-(?P<secret>{_B64URL}{{20,64}})",
           "GitLab tokens: personal (glpat-), pipeline trigger, deploy, runner, OAuth, feed, ... (gl*-)"),
    _shape("slack_token", "xox xapp-", r"(?:xox[abeoprs]|xapp)-(?P<secret>[A-Za-z0-9\-]{10,255})",
           "Slack tokens: bot (xoxb-), user (xoxp-), app (xapp-), config (xoxe-), legacy"),
    _shape("huggingface", "hf_ api_org_", r"(?:hf|api_org)_(?P<secret>[A-Za-z0-9]{30,64})",
           "Hugging Face user (hf_) and organisation (api_org_) tokens"),
    _shape("npm", "npm_", r"npm_(?P<secret>[A-Za-z0-9]{36,64})", "npm access token: npm_ + 36"),
    _shape("pypi", "pypi-ageichlwas5vcmc", rf"pypi-(?P<secret>AgEIcHlwaS5vcmc{_B64URL}{{50,1024}})",
           "PyPI upload token (a macaroon naming pypi.org)"),
    _shape("sendgrid", "sg.", rf"SG\.(?P<secret>{_B64URL}{{22}}\.{_B64URL}{{43}})", "SendGrid API key: SG.22.43"),
    _shape("docker", "dckr_pat_ dckr_oat_", rf"dckr_[po]at_(?P<secret>{_B64URL}{{20,64}})",
           "Docker Hub personal / organisation access token"),
    _shape("groq", "gsk_", r"gsk_(?P<secret>[A-Za-z0-9]{48,64})", "Groq API key: gsk_ + 52"),
    _shape("replicate", "r8_", r"r8_(?P<secret>[A-Za-z0-9]{30,40})", "Replicate API token: r8_ + 37"),
    _shape("perplexity", "pplx-", r"pplx-(?P<secret>[A-Za-z0-9]{40,64})", "Perplexity API key: pplx- + 48"),
    _shape("xai", "xai-", r"xai-(?P<secret>[A-Za-z0-9]{70,90})", "xAI API key: xai- + 80"),
    _shape("age", "age-secret-key-1", r"(?P<secret>AGE-SECRET-KEY-1[0-9A-Z]{58})", "age encryption secret key"),
    _shape("shopify", "shpat_ shpca_ shppa_ shpss_", r"shp(?:at|ca|pa|ss)_(?P<secret>[a-fA-F0-9]{32})",
           "Shopify access tokens and shared secrets"),
    _shape("databricks", "dapi", r"dapi(?P<secret>[a-f0-9]{32})", "Databricks personal access token: dapi + 32 hex"),
    _shape("digitalocean", "dop_v1_ doo_v1_ dor_v1_", r"do[por]_v1_(?P<secret>[a-f0-9]{64})",
           "DigitalOcean personal, OAuth and refresh tokens"),
    _shape("vault", "hvs. hvb.", rf"hv[sb]\.(?P<secret>{_B64URL}{{24,512}})", "HashiCorp Vault service / batch token"),
    _shape("doppler", "dp.pt.", r"dp\.pt\.(?P<secret>[A-Za-z0-9]{40,44})", "Doppler personal token"),
    _shape("postman", "pmak-", r"PMAK-(?P<secret>[a-f0-9]{24}-[a-f0-9]{34})", "Postman API key"),
    _shape("new_relic", "nrak-", r"NRAK-(?P<secret>[A-Z0-9]{27})", "New Relic user API key"),
    _shape("grafana", "glc_ glsa_", r"gl(?:c|sa)_(?P<secret>[A-Za-z0-9+/=_]{32,400})",
           "Grafana Cloud token (glc_) and service account token (glsa_)"),
    _shape("sentry", "sntrys_ sntryu_", r"sntry[su]_(?P<secret>[A-Za-z0-9+/=_]{30,1024})",
           "Sentry organisation (sntrys_) and user (sntryu_) auth tokens"),
    _shape("linear", "lin_api_", r"lin_api_(?P<secret>[A-Za-z0-9]{40})", "Linear API key"),
    _shape("atlassian", "atatt3", r"(?P<secret>ATATT3[A-Za-z0-9_\-=]{100,255})", "Atlassian API token"),
    _shape("pulumi", "pul-", r"pul-(?P<secret>[a-f0-9]{40})", "Pulumi access token"),
    _shape("square", "sq0atp- sq0csp-", rf"sq0(?:atp|csp)-(?P<secret>{_B64URL}{{22,64}})",
           "Square access token and OAuth secret"),
)
TEXT_MARKERS = tuple(dict.fromkeys(marker for shape in SHAPES for marker in shape.markers))

# per marker (as indexed in TEXT_MARKERS): the (regex, boundary) of each shape it starts
_MARKER_SHAPES = tuple(tuple((shape.regex, shape.boundary) for shape in SHAPES if marker in shape.markers)
                       for marker in TEXT_MARKERS)


@cache
def _marker_automata() -> tuple[BytesAhoCorasick, AhoCorasick]:
    """All markers as one DFA, for bytes and for str (built on first use, not at import)."""
    return (BytesAhoCorasick([marker.encode() for marker in TEXT_MARKERS], implementation=Implementation.DFA),
            AhoCorasick(list(TEXT_MARKERS), implementation=Implementation.DFA))


def find_markers(low: str) -> list[tuple[int, int, int]]:
    """Every occurrence of every ``TEXT_MARKERS`` entry in ``low`` (folded), overlapping ones
    included, as (marker index, start, end), ordered by end: one pass, over the UTF-8 of an ASCII
    text (byte offsets are then character offsets), over the str otherwise (offsets in characters)."""
    for_bytes, for_str = _marker_automata()
    if low.isascii():
        return for_bytes.find_matches_as_indexes(low.encode("ascii"), overlapping=True)
    try:
        return for_str.find_matches_as_indexes(low, overlapping=True)
    except UnicodeEncodeError:  # a lone surrogate: one "?" instead, same length (it holds no marker)
        return for_str.find_matches_as_indexes(low.encode("utf-8", "replace").decode(), overlapping=True)


def secret_spans(value: str) -> list[tuple[int, int]]:
    """Where ``value`` holds secrets, as sorted, non-overlapping (start, end) spans."""
    if len(value) < 8:
        return []
    low = fold(value)
    found = find_markers(low)
    if not found:
        return []  # the usual value: one pass, no marker
    starts: dict[int, list[int]] = {}  # marker index -> its starts, ascending (same length: ends ascend)
    for index, start, _ in found:
        bucket = starts.get(index)
        if bucket is None:
            starts[index] = [start]
        else:
            bucket.append(start)
    spans: list[tuple[int, int]] = []  # (sorted and merged below: the order rules are tried in is free)
    for marker, positions in starts.items():
        for regex, boundary in _MARKER_SHAPES[marker]:
            i, n = 0, len(positions)
            while i < n:
                at = positions[i]
                i += 1
                if boundary and at and (low[at - 1].isalnum() or low[at - 1] == "_"):
                    continue
                match = regex.match(value, at)
                if match is not None:
                    spans.append(match.span("secret"))
                    if match.end() > at + 1:  # a marker inside this match is decided
                        i = bisect_left(positions, match.end(), i)
    if len(spans) > 1:
        spans.sort()
        merged = [spans[0]]
        for begin, end in spans[1:]:
            if begin <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((begin, end))
        spans = merged
    return spans


def redact_text(value: str, keep: int | None = None) -> str:
    """``value`` with the secrets it visibly holds replaced by ``***``; with ``keep``, only its first
    ``keep`` characters (the caller marks the cut), scanned with ``MARGIN`` more characters so a
    secret that the cut splits is still recognised and hidden."""
    if keep is not None and len(value) > keep:
        spans = [(begin, min(end, keep)) for begin, end in secret_spans(value[:keep + MARGIN]) if begin < keep]
        value = value[:keep]
    else:
        spans = secret_spans(value)
    if not spans:
        return value
    out, last = [], 0
    for begin, end in spans:
        out.append(value[last:begin])
        out.append(REDACTED)
        last = end
    out.append(value[last:])
    return "".join(out)
