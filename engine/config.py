"""Configuration: one dataclass, read from the environment and a ``.env`` file.

Every setting the project reads is a field of :class:`Settings` with its type and
default. A value that does not parse is a :class:`ConfigurationError` at start-up, and so
is a variable that looks like a typo of one of ours (``QUEUE_LEASE_TIMOUT``: the error
names ``QUEUE_LEASE_TIMEOUT``), never silently ignored. Variables other software owns are
left alone even when they share a prefix with ours: Kubernetes service links
(``REDIS_SERVICE_HOST``, ``REDIS_PORT=tcp://...``), LangChain's and Azure's ``OPENAI_*``.
Secrets (passwords, API keys) are kept out of ``repr`` and every message.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from .crypto import parse_keys
from .pricing import parse_prices
from .errors import ConfigurationError

log = logging.getLogger("engine.config")

# Prefixes only this project uses: an unknown variable with one of them is an error.
OWNED_PREFIXES = ("QUEUE_", "AGENT_", "CONSOLE_")
# Prefixes other software shares (redis images and clients, the openai package, LangChain,
# Azure): an unknown variable with one of them is an error only when it looks like a typo
# of one of our settings; otherwise it belongs to someone else and is left alone.
SHARED_PREFIXES = ("REDIS_", "OPENAI_")
# How alike (difflib ratio) an unknown name must be to one of ours to count as its typo.
TYPO_CUTOFF = 0.8
# Variables of ours that are known but read elsewhere (e.g. by the openai package itself).
PASSTHROUGH = frozenset({"OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID",
                         "OPENAI_ORGANIZATION", "OPENAI_LOG"})
# Other software's variables that a typo check would mistake for ours (OPENAI_API_BASE is
# as close to OPENAI_API_KEY as REDIS_HOSTNAME is to REDIS_HOST): LangChain, the pre-1.0
# openai package and Azure OpenAI set these.
FOREIGN = frozenset({"OPENAI_API_BASE", "OPENAI_API_VERSION", "OPENAI_API_TYPE", "OPENAI_MODEL",
                     "OPENAI_MODEL_NAME", "OPENAI_API_HOST", "OPENAI_PROXY", "OPENAI_DEPLOYMENT_NAME",
                     "OPENAI_EMBEDDING_MODEL", "OPENAI_ORG"})
# Kubernetes gives every pod variables for each Service of its namespace: <NAME>_SERVICE_HOST,
# <NAME>_SERVICE_PORT[_<port name>], and the docker-link style <NAME>_PORT=tcp://ip:port and
# <NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]. A Service named "redis" or "queue" puts
# them under our prefixes.
_SERVICE_LINK_NAME = re.compile(r"^[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?"
                                r"|PORT_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)$")
_SERVICE_LINK_VALUE = re.compile(r"^(tcp|udp|sctp)://[^\s/]+:\d+$")
# Settings that REDIS_URL overrides: set beside it, they cannot apply.
URL_PARTS = ("REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD")
_logged_ignored: set[tuple[str, ...]] = set()
SECRET_FIELDS = frozenset({"redis_password", "openai_api_key", "console_password", "encryption_keys"})
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """Every setting of the queue, the worker, the agent and the console.

    Build it with :meth:`from_env`; construct it directly in tests.
    """

    # Connection (the guide's names).
    redis_url: str | None = field(default=None, metadata={"env": "REDIS_URL"})
    redis_host: str = field(default="localhost", metadata={"env": "REDIS_HOST"})
    redis_port: int = field(default=6379, metadata={"env": "REDIS_PORT"})
    redis_db: int = field(default=0, metadata={"env": "REDIS_DB"})
    redis_password: str | None = field(default=None, metadata={"env": "REDIS_PASSWORD"}, repr=False)
    redis_ssl_ca_certs: str | None = field(default=None, metadata={"env": "REDIS_SSL_CA_CERTS"})
    redis_cluster: bool = field(default=False, metadata={"env": "REDIS_CLUSTER"})
    use_redis_queue: bool = field(default=True, metadata={"env": "USE_REDIS_QUEUE"})
    # Queue behaviour.
    namespace: str = field(default="agent_queue", metadata={"env": "QUEUE_NAMESPACE"})
    heartbeat_interval: float = field(default=30.0, metadata={"env": "QUEUE_HEARTBEAT_INTERVAL"})
    lease_timeout: float = field(default=90.0, metadata={"env": "QUEUE_LEASE_TIMEOUT"})
    max_stalls: int = field(default=3, metadata={"env": "QUEUE_MAX_STALLS"})
    # How long a task type that a worker handled recently waits for a worker that handles it
    # again (a rolling deploy) before "no handler for task type X" is final.
    handler_grace: float = field(default=300.0, metadata={"env": "QUEUE_HANDLER_GRACE"})
    result_ttl: float = field(default=86400.0, metadata={"env": "QUEUE_RESULT_TTL"})
    failed_ttl: float = field(default=7 * 86400.0, metadata={"env": "QUEUE_FAILED_TTL"})
    max_finished_index: int = field(default=2_000_000, metadata={"env": "QUEUE_MAX_FINISHED"})
    max_payload_bytes: int = field(default=1024 * 1024, metadata={"env": "QUEUE_MAX_PAYLOAD_BYTES"})
    max_result_bytes: int = field(default=1024 * 1024, metadata={"env": "QUEUE_MAX_RESULT_BYTES"})
    events_max_len: int = field(default=10_000, metadata={"env": "QUEUE_EVENTS_MAX_LEN"})
    # How long a submit watches its socket for the reply before sleeping on it (engine/wire.py
    # says why one might). Off by default: in paired runs it paid nothing on a quiet host and
    # cost a third of the one-call rate and twice the client CPU on a busy one
    # (docs/ARCHITECTURE.md, "Throughput and latency"); a library embedded in a web
    # application must not spin a core per submit.
    reply_spin_us: int = field(default=0, metadata={"env": "QUEUE_REPLY_SPIN_US"})
    default_max_retries: int = field(default=3, metadata={"env": "QUEUE_MAX_RETRIES"})
    default_retry_delay: float = field(default=60.0, metadata={"env": "QUEUE_RETRY_DELAY"})
    data_dir: str = field(default="data", metadata={"env": "QUEUE_DATA_DIR"})
    # Fernet keys, comma-separated, the first encrypting (engine/crypto.py): payloads and
    # results are encrypted at rest when set.
    encryption_keys: str | None = field(default=None, metadata={"env": "QUEUE_ENCRYPTION_KEYS"},
                                        repr=False)
    # Start a worker on a Redis that evicts keys (engine/health.py says why it refuses).
    allow_eviction: bool = field(default=False, metadata={"env": "QUEUE_ALLOW_EVICTION"})
    # CSV jobs (see engine.csv_jobs) and recurring schedules (see engine.scheduler).
    csv_max_bytes: int = field(default=20 * 1024 * 1024, metadata={"env": "QUEUE_CSV_MAX_BYTES"})
    csv_max_rows: int = field(default=100_000, metadata={"env": "QUEUE_CSV_MAX_ROWS"})
    schedule_timezone: str = field(default="UTC", metadata={"env": "QUEUE_SCHEDULE_TIMEZONE"})
    schedule_misfire_grace: float = field(default=60.0, metadata={"env": "QUEUE_SCHEDULE_MISFIRE_GRACE"})
    # Agent (see engine.agent).
    agent_backend: str = field(default="demo", metadata={"env": "AGENT_BACKEND"})
    agent_model: str | None = field(default=None, metadata={"env": "AGENT_MODEL"})
    agent_timeout: float = field(default=60.0, metadata={"env": "AGENT_TIMEOUT"})
    agent_system_prompt: str | None = field(default=None, metadata={"env": "AGENT_SYSTEM_PROMPT"})
    # The openai backend streams answers (task.stream: readers see them grow); false: one reply.
    agent_stream: bool = field(default=True, metadata={"env": "AGENT_STREAM"})
    # Prices per model, JSON: {"<model>": {"input": <$>, "output": <$>}} in dollars per
    # million tokens (engine/pricing.py). Models not listed are counted in tokens only.
    agent_prices: str | None = field(default=None, metadata={"env": "AGENT_PRICES"})
    # Conversations by session (engine/agent/conversation.py): an agent task with a session
    # joins the session's conversation (its earlier queries and answers go to the provider
    # before the query) unless this is off or the task says otherwise; batch and CSV rows
    # never join. The history kept: at most MAX_TURNS messages and MAX_TOKENS estimated
    # tokens (4 characters a token; oldest dropped first), gone TTL seconds after its last turn.
    agent_conversations: bool = field(default=True, metadata={"env": "AGENT_CONVERSATIONS"})
    agent_conversation_max_turns: int = field(default=20,
                                              metadata={"env": "AGENT_CONVERSATION_MAX_TURNS"})
    agent_conversation_max_tokens: int = field(default=4000,
                                               metadata={"env": "AGENT_CONVERSATION_MAX_TOKENS"})
    agent_conversation_ttl: float = field(default=86400.0,
                                          metadata={"env": "AGENT_CONVERSATION_TTL"})
    agent_demo_latency: float = field(default=0.5, metadata={"env": "AGENT_DEMO_LATENCY"})
    agent_demo_failure_rate: float = field(default=0.0, metadata={"env": "AGENT_DEMO_FAILURE_RATE"})
    openai_base_url: str | None = field(default=None, metadata={"env": "AGENT_OPENAI_BASE_URL"})
    openai_api_key: str | None = field(default=None, metadata={"env": "AGENT_OPENAI_API_KEY"}, repr=False)
    # Provider limits (engine/limits.py): caps on the agent backend's limit key that what
    # the provider says is never allowed above (unset: learnt from the provider alone), and
    # how long a task may wait for a limit before it fails ("rate limited out").
    agent_limit_rpm: float | None = field(default=None, metadata={"env": "AGENT_LIMIT_RPM"})
    agent_limit_tpm: float | None = field(default=None, metadata={"env": "AGENT_LIMIT_TPM"})
    agent_limit_concurrency: int | None = field(default=None,
                                                metadata={"env": "AGENT_LIMIT_CONCURRENCY"})
    limit_horizon: float = field(default=3600.0, metadata={"env": "QUEUE_LIMIT_HORIZON"})
    # Seconds a pending task waits before it is lifted one priority level (0: never), so a
    # steady stream of URGENT work cannot starve LOW work for ever (promote.lua).
    aging: float = field(default=0.0, metadata={"env": "QUEUE_AGING_SECONDS"})
    # Console.
    console_password: str | None = field(default=None, metadata={"env": "CONSOLE_PASSWORD"}, repr=False)
    console_refresh_seconds: float = field(default=3.0, metadata={"env": "CONSOLE_REFRESH_SECONDS"})
    # Roles of identities signed in with OpenID Connect (engine/access.py): comma lists of
    # emails, *@domain, group:<name> (from the CONSOLE_GROUPS_CLAIM claim) or *.
    console_admins: str | None = field(default=None, metadata={"env": "CONSOLE_ADMINS"})
    console_operators: str | None = field(default=None, metadata={"env": "CONSOLE_OPERATORS"})
    console_viewers: str | None = field(default=None, metadata={"env": "CONSOLE_VIEWERS"})
    console_groups_claim: str = field(default="groups", metadata={"env": "CONSOLE_GROUPS_CLAIM"})

    def __post_init__(self) -> None:
        self._validate()

    def __repr__(self) -> str:  # the dataclass repr would print REDIS_URL's password
        return "Settings(%s)" % ", ".join(f"{k}={v!r}" for k, v in self.describe().items())

    def _validate(self) -> None:
        positive = ("heartbeat_interval", "lease_timeout", "result_ttl", "failed_ttl",
                    "max_payload_bytes", "max_result_bytes", "events_max_len", "console_refresh_seconds",
                    "csv_max_bytes", "csv_max_rows", "agent_timeout", "limit_horizon",
                    "agent_conversation_max_tokens", "agent_conversation_ttl")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{_env_name(name)} must be greater than 0")
        if self.lease_timeout <= self.heartbeat_interval:
            raise ConfigurationError(
                "QUEUE_LEASE_TIMEOUT must be longer than QUEUE_HEARTBEAT_INTERVAL "
                "(a lease must survive at least one missed heartbeat)")
        for name in ("max_stalls", "default_max_retries", "redis_db", "max_finished_index",
                     "schedule_misfire_grace", "reply_spin_us", "handler_grace", "aging"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{_env_name(name)} must not be negative")
        for name in ("agent_limit_rpm", "agent_limit_tpm", "agent_limit_concurrency"):
            value = getattr(self, name)
            if value is not None and not 0 < value < float("inf"):
                raise ConfigurationError(f"{_env_name(name)} must be a number greater than 0")
        if self.agent_conversation_max_turns < 2:
            raise ConfigurationError("AGENT_CONVERSATION_MAX_TURNS must be at least 2 "
                                     "(messages: a query and its answer)")
        if not 0.0 <= self.agent_demo_failure_rate <= 1.0:
            raise ConfigurationError("AGENT_DEMO_FAILURE_RATE must be between 0 and 1")
        if not _is_timezone(self.schedule_timezone):
            raise ConfigurationError(f"QUEUE_SCHEDULE_TIMEZONE: unknown timezone {self.schedule_timezone!r} "
                                     "(use an IANA name such as Europe/Paris, or UTC)")
        if self.redis_url:
            check_redis_url(self.redis_url)
        if self.encryption_keys:
            parse_keys(self.encryption_keys)
        parse_prices(self.agent_prices)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 env_file: str | os.PathLike | None = ".env", **overrides: Any) -> "Settings":
        """Read settings from ``env_file`` (when it exists) overlaid by ``environ``
        (default ``os.environ``), then ``overrides`` (field names)."""
        values: dict[str, str] = {}
        if env_file and Path(env_file).is_file():
            values.update(read_env_file(env_file))
        values.update(os.environ if environ is None else environ)
        return cls.from_mapping(values, **overrides)

    @classmethod
    def from_mapping(cls, values: Mapping[str, str], **overrides: Any) -> "Settings":
        """Parse the project's variables out of ``values``; reject unknown ones."""
        by_env = {f.metadata["env"]: f for f in dataclasses.fields(cls)}
        _reject_unknown(values, by_env)
        ignored = _overridden_by_url(values)
        kwargs = {f.name: _parse(f, values[env]) for env, f in by_env.items()
                  if env in values and env not in ignored}
        if "openai_api_key" not in kwargs and values.get("OPENAI_API_KEY"):
            kwargs["openai_api_key"] = values["OPENAI_API_KEY"]
        if "openai_base_url" not in kwargs and values.get("OPENAI_BASE_URL"):
            kwargs["openai_base_url"] = values["OPENAI_BASE_URL"]
        kwargs.update(overrides)
        return cls(**kwargs)

    # -- derived ----------------------------------------------------------------------
    @property
    def price_table(self) -> dict[str, tuple[float, float]]:
        """``AGENT_PRICES`` parsed: {model: (input, output) dollars per million tokens}."""
        return parse_prices(self.agent_prices)

    def connection_url(self) -> str:
        """The Redis URL to connect to: ``REDIS_URL`` or one built from the parts."""
        if self.redis_url:
            return self.redis_url
        auth = ":%s@" % quote(self.redis_password, safe="") if self.redis_password else ""
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    def describe(self) -> dict[str, Any]:
        """Every setting by its variable name, secrets masked: safe to print or show."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value:
                value = "***"
            elif f.name == "redis_url" and value:
                value = mask_url(value)
            out[f.metadata["env"]] = value
        return out


def _reject_unknown(values: Mapping[str, str], by_env: Mapping[str, Any]) -> None:
    """Raise for variables that look like ours but are not: any unknown name under a prefix
    only we use, and under a shared prefix a name close to one of our settings. Each is
    named with the setting it resembles."""
    ours = sorted({*by_env, *PASSTHROUGH})
    unknown = []
    for name in sorted(values):
        if name in by_env or name in PASSTHROUGH or name in FOREIGN:
            continue
        if not name.startswith(OWNED_PREFIXES + SHARED_PREFIXES) or _is_service_link(name, values[name]):
            continue
        close = difflib.get_close_matches(name, ours, n=1, cutoff=TYPO_CUTOFF)
        if close:
            unknown.append(f"{name} (did you mean {close[0]}?)")
        elif name.startswith(OWNED_PREFIXES):
            unknown.append(name)
    if unknown:
        raise ConfigurationError("unknown setting(s): " + ", ".join(unknown)
                                 + ". Known settings: " + ", ".join(sorted(by_env)))


def _is_service_link(name: str, value: str) -> bool:
    """Whether ``name=value`` is one of the variables Kubernetes sets for a Service."""
    return bool(_SERVICE_LINK_NAME.match(name)) or (
        name.endswith("_PORT") and bool(_SERVICE_LINK_VALUE.match(value.strip())))


def _overridden_by_url(values: Mapping[str, str]) -> frozenset[str]:
    """The connection parts set beside ``REDIS_URL``: it wins, so they are not read at all
    (a Kubernetes ``REDIS_PORT=tcp://10.0.0.5:6379`` must not stop a worker whose URL is
    right). Said once per process in the log. Without ``REDIS_URL``, a service link in
    ``REDIS_PORT`` is an error that says what to set instead."""
    present = tuple(name for name in URL_PARTS if values.get(name) is not None)
    if not values.get("REDIS_URL", "").strip():
        port = values.get("REDIS_PORT", "").strip()
        if _SERVICE_LINK_VALUE.match(port):
            raise ConfigurationError(
                "REDIS_PORT holds a Kubernetes service link (scheme://address:port), not a port "
                "number: set REDIS_URL (e.g. redis://<service name>:6379/0), which takes "
                "precedence, or REDIS_HOST and a numeric REDIS_PORT")
        return frozenset()
    if present and present not in _logged_ignored:
        _logged_ignored.add(present)
        log.warning("REDIS_URL is set: ignoring %s", ", ".join(present))
    return frozenset(present)


def _is_timezone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        return False
    return True


def _env_name(field_name: str) -> str:
    return next(f.metadata["env"] for f in dataclasses.fields(Settings) if f.name == field_name)


def _parse(f: dataclasses.Field, raw: str) -> Any:
    text = raw.strip()
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    name = f.metadata["env"]
    try:
        if kind == "bool":
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind in ("int | None", "float | None") and text:
            return int(text) if kind.startswith("int") else float(text)
    except ValueError:
        shown = "***" if f.name in SECRET_FIELDS else repr(raw)
        kind = kind.replace(" | None", "")
        article = "an" if kind == "int" else "a"
        raise ConfigurationError(f"{name} must be {article} {kind}, got {shown}") from None
    return text or None if "None" in kind else text


def read_env_file(path: str | os.PathLike) -> dict[str, str]:
    """Parse a ``.env`` file (``KEY=value`` lines, ``#`` comments, optional quotes,
    optional ``export``). A malformed line is an error naming its number.

    Our own few lines rather than python-dotenv: it skips a malformed line with a logged
    warning, and a setting that silently does not apply is what this module exists to stop.
    """
    values = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise ConfigurationError(f"{path}, line {number}: expected KEY=value")
        values[key] = _env_value(value)
    return values


def _env_value(value: str) -> str:
    """A value as shells and python-dotenv read it: inside quotes ``#`` is text, and a
    comment may follow the closing quote (``KEY='5' # why``); unquoted, `` #`` starts one."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    if value[:1] in ("'", '"'):
        end = value.find(value[0], 1)
        if end > 0 and value[end + 1:].lstrip().startswith("#"):
            return value[1:end]
    if " #" in value:
        value = value.split(" #", 1)[0].rstrip()
    return value


_URL_SHAPE = ("REDIS_URL cannot be read as {scheme}://[[user]:password@]host[:port][/db]: {why}. "
              "Characters such as # / ? @ % in a password must be percent-encoded "
              "(# is %23, / is %2F, ? is %3F, @ is %40, % is %25)")


def check_redis_url(url: str) -> None:
    """Raise :class:`ConfigurationError` unless ``url`` is a Redis URL redis-py reads as
    its writer meant. The message names what is wrong, never a part of the URL: in a URL
    that does not parse, any part may be a piece of the password.

    Without this, an unencoded ``#`` in a password (``redis://:pa#ss@host/0``) cut the URL
    short: redis-py failed to read ``pa`` as a port, the worker retried for ever as if Redis
    were down, and the error it printed held the start of the password.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigurationError(_URL_SHAPE.format(scheme="redis", why="it does not parse")) from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError("REDIS_URL must start with redis://, rediss:// or unix://")
    if parts.scheme == "unix":
        if not parts.path or parts.fragment or "@" in parts.path:
            raise ConfigurationError("REDIS_URL must read unix://[[user]:password@]/path/to/socket"
                                     "[?db=N]; percent-encode # / ? @ % in a password")
        return
    why = None
    if parts.fragment or "#" in url:
        why = "it holds a '#', which ends a URL"
    elif "@" in parts.path or "@" in parts.query:
        why = "an '@' comes after the host (a password cut short by an unencoded character?)"
    elif parts.path not in ("", "/") and not parts.path[1:].isdigit():
        why = "the part after the host is not a database number"
    else:
        try:
            parts.port
        except ValueError:
            why = "the port is not a number from 0 to 65535"
    if why:
        raise ConfigurationError(_URL_SHAPE.format(scheme=parts.scheme, why=why))


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for logs and error messages.

    ``redis://:secret@host:6379/0`` becomes ``redis://:***@host:6379/0``; a user name is kept
    (``redis://alice:***@host/0``), and a ``password=`` query parameter is masked too.
    """
    scheme, sep, rest = url.partition("://")
    userinfo, _, after = rest.rpartition("@")
    if sep and "@" in rest and _urlsplit_netloc(url).rpartition("@")[0] != userinfo:
        # An unencoded "#", "?" or "/" in the password makes urlsplit cut the netloc short, which
        # would leave part of the password in the path or fragment. Mask everything up to the last
        # "@" instead: over-masking a URL with an "@" in its query is the safe mistake.
        if ":" not in userinfo:
            return f"{scheme}://***@{after}"
        return f"{scheme}://{userinfo.partition(':')[0]}:***@{after}"
    try:
        parts = urlsplit(url)
    except ValueError:
        # Unparseable: say nothing about it rather than risk echoing a secret.
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        # Without a colon the userinfo is a user name (that is how redis-py reads it): kept.
        netloc = f"{user}:***@{hostport}" if sep else f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() == "password" for k, _ in pairs):
            query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing secret in it: return it untouched
    # Built by hand: urlunsplit turns "unix:///path" into "unix:/path".
    masked = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else f"{netloc}{parts.path}"
    if query:
        masked += f"?{query}"
    if parts.fragment:
        masked += f"#{parts.fragment}"
    return masked


def _urlsplit_netloc(url: str) -> str:
    """The netloc urlsplit sees, or "" when it cannot parse the URL."""
    try:
        return urlsplit(url).netloc
    except ValueError:
        return ""
