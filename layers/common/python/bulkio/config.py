"""The functions' settings: one typed model of the environment that template.yaml (or the local stack) gives each
function, validated when a function first reads it (its cold start) with errors that name the variable.

Each field is read from the variable of its upper-cased name (`validation_alias` where the name differs). A blank
number, switch or list keeps its default, as an unset one does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_core import PydanticCustomError, PydanticUseDefault
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from bulkio.adapters.tokens import AuthSettings
from bulkio.domain.records import ValidationRules

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})  # any other word switches off


class ConfigError(ValueError):
    """Variables that do not hold what the functions expect; the message names each one, its value and what fits."""


def _whole_number(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not value.strip():
        raise PydanticUseDefault()
    try:
        return int(value)
    except ValueError:
        raise PydanticCustomError("whole_number", "expected a whole number (digits only)") from None


def _switch(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    word = value.strip().lower()
    if not word:
        raise PydanticUseDefault()
    return word in TRUE_WORDS


def _ports(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    ports: set[int] = set()
    for entry in filter(str.strip, value.split(",")):
        try:
            port = int(entry)
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            raise PydanticCustomError(
                "port_list",
                "expected comma-separated port numbers (1-65535), but {entry} is not one",
                {"entry": repr(entry.strip())},
            )
        ports.add(port)
    return frozenset(ports)


def _names(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    names = frozenset(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise PydanticUseDefault()
    return names


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
Switch = Annotated[bool, BeforeValidator(_switch)]  # 1, true, yes or on (any case) is on
PortList = Annotated[frozenset[int], NoDecode, BeforeValidator(_ports)]  # comma-separated, blanks skipped
NameList = Annotated[frozenset[str], NoDecode, BeforeValidator(_names)]  # comma-separated; none keeps the default

# AuthSettings and ValidationRules are the value types the adapters and the domain take: their defaults are the
# variables' defaults, so each is written once.
_AUTH = AuthSettings()
_RULES = ValidationRules()


class Settings(BaseSettings):
    """`Settings(field=value, ...)` is a plain value (defaults for the rest); `Settings.from_env()` reads an
    environment."""

    model_config = SettingsConfigDict(frozen=True, validate_by_name=True, extra="forbid")

    jobs_table: str = ""
    import_bucket: str = ""
    chunk_queue_url: str = ""
    database_url: str = Field("", repr=False)  # holds the password
    # on AWS: the Secrets Manager secret holding the database credentials, read when DATABASE_URL is empty
    database_secret_arn: str = ""
    chunker_function_name: str = ""
    chunk_records: WholeNumber = 1000
    # a chunk closes at chunk_records records or this many encoded bytes: memory per chunk stays bounded
    chunk_max_bytes: WholeNumber = 4 * 1024**2
    max_upload_bytes: WholeNumber = 10 * 1024**2
    max_record_bytes: WholeNumber = 1024**2
    presign_ttl_seconds: WholeNumber = 3600
    # a resumable upload (upload_size): how long after the job's creation its parts may still come
    multipart_upload_window_seconds: WholeNumber = 86400
    idempotency_ttl_seconds: WholeNumber = 86400
    dry_run_retention_seconds: WholeNumber = 86400  # how long a validated dry run can be committed
    event_bus_name: str = "default"  # where jobs' completion events go
    # completion callbacks (callback_url): their queue, how long a POST may take, the retry backoff (doubling from
    # the first delay, at most the longest) and the window after the job's end in which retries start
    callback_queue_url: str = ""
    callback_timeout_seconds: WholeNumber = 10
    callback_retry_first_seconds: WholeNumber = 30
    callback_retry_longest_seconds: WholeNumber = 3600
    callback_retry_window_seconds: WholeNumber = 86400
    export_bucket: str = ""
    state_machine_arn: str = Field("", validation_alias="EXPORT_STATE_MACHINE_ARN")
    pushgateway_url: str = ""
    # limits against hostile or oversized files: gzip bombs, and records per import job
    max_decompressed_bytes: WholeNumber = 10 * 1024**3
    max_compression_ratio: WholeNumber = 100
    max_records_per_job: WholeNumber = 1_000_000
    # remote URL imports (SSRF guards): hosts/IPs/CIDRs (optionally host:port) that may be private, ports that no
    # URL may reach on a non-public address (the embedded stack's own services), redirect, time and size bounds
    allow_http_urls: Switch = False
    url_timeout_seconds: WholeNumber = 30
    url_allowed_hosts: str = ""
    url_denied_ports: PortList = frozenset()
    max_url_redirects: WholeNumber = 3
    max_source_bytes: WholeNumber = 5 * 1024**3
    url_max_seconds: WholeNumber = 840
    # the chunker's lease on a job, renewed while it reads: a killed chunker's job is taken over this soon
    chunker_lease_seconds: WholeNumber = 60
    # a failed chunk's next try: doubling from the first delay with each receive, at most the longest
    chunk_retry_first_seconds: WholeNumber = 2
    chunk_retry_longest_seconds: WholeNumber = 60
    # the sweeper: writers silent this long with chunks unstaged are stalled; how often it relaunches a
    # chunker or re-sends chunks before it fails the job; how long per-job metric groups stay on the Pushgateway
    sweep_stall_seconds: WholeNumber = 180
    sweep_max_chunker_runs: WholeNumber = 3
    sweep_max_resends: WholeNumber = 5
    job_metrics_retention_seconds: WholeNumber = 86400
    # bearer tokens (see bulkio.adapters.tokens): neither a secret nor a JWKS URL refuses every token
    auth_jwt_secret: str = Field(_AUTH.jwt_secret, repr=False)
    auth_jwks_url: str = _AUTH.jwks_url
    auth_issuer: str = _AUTH.issuer
    auth_audience: str = _AUTH.audience
    auth_leeway_seconds: WholeNumber = _AUTH.leeway_seconds
    auth_scope_prefix: str = _AUTH.scope_prefix
    user_roles: NameList = _RULES.user_roles

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only the arguments: a value built in code (tests) must not pick up whatever the process environment holds.
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings in `environ` (the process environment by default). Raises ConfigError."""
        source = _EnvironmentSource(cls, os.environ if environ is None else environ)
        try:
            return cls(_build_sources=((source,), {}))
        except ValidationError as error:
            raise ConfigError(_explain(error)) from None

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Each field's environment variable, by field name."""
        return {
            name: field.validation_alias if isinstance(field.validation_alias, str) else name.upper()
            for name, field in cls.model_fields.items()
        }

    def auth(self) -> AuthSettings:
        return AuthSettings(
            jwt_secret=self.auth_jwt_secret,
            jwks_url=self.auth_jwks_url,
            issuer=self.auth_issuer,
            audience=self.auth_audience,
            leeway_seconds=self.auth_leeway_seconds,
            scope_prefix=self.auth_scope_prefix,
        )

    def validation_rules(self) -> ValidationRules:
        return ValidationRules(user_roles=self.user_roles)


class _EnvironmentSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def _explain(error: ValidationError) -> str:
    variables = Settings.variables()
    by_key = {**{variable: variable for variable in variables.values()}, **variables}
    problems = []
    for detail in error.errors(include_url=False):
        key = str(detail["loc"][0]) if detail["loc"] else ""
        variable = by_key.get(key, key.upper())
        problems.append(f"{variable} is {detail['input']!r}: {detail['msg']}")
    return "invalid configuration: " + "; ".join(problems)
