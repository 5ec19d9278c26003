"""Settings read from the environment that template.yaml (or the local stack) gives each function."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    return int(raw) if raw else default


def _ports(environ: Mapping[str, str], name: str) -> frozenset[int]:
    ports: set[int] = set()
    for entry in environ.get(name, "").split(","):
        if entry.strip():
            port = int(entry)
            if not 0 < port < 65536:
                raise ValueError(f"{name}: {port} is not a port number (1-65535)")
            ports.add(port)
    return frozenset(ports)


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    return raw in {"1", "true", "yes", "on"} if raw else default


@dataclass(frozen=True, slots=True)
class Settings:
    jobs_table: str
    import_bucket: str
    chunk_queue_url: str
    database_url: str
    chunker_function_name: str
    chunk_records: int
    max_upload_bytes: int
    presign_ttl_seconds: int
    idempotency_ttl_seconds: int
    allow_http_urls: bool
    url_timeout_seconds: int
    max_record_bytes: int
    export_bucket: str
    state_machine_arn: str
    pushgateway_url: str = ""
    # limits against hostile or oversized files: gzip bombs, and records per import job
    max_decompressed_bytes: int = 10 * 1024**3
    max_compression_ratio: int = 100
    max_records_per_job: int = 1_000_000
    # a chunk closes at chunk_records records or this many encoded bytes: memory per chunk stays bounded
    chunk_max_bytes: int = 4 * 1024**2
    # remote URL imports (SSRF guards): hosts/IPs/CIDRs (optionally host:port) that may be private, ports that no
    # URL may reach on a non-public address (the embedded stack's own services), redirect and size bounds
    url_allowed_hosts: str = ""
    url_denied_ports: frozenset[int] = frozenset()
    max_url_redirects: int = 3
    max_source_bytes: int = 5 * 1024**3
    url_max_seconds: int = 840
    # on AWS: the Secrets Manager secret holding the database credentials, read when DATABASE_URL is empty
    database_secret_arn: str = ""
    # the chunker's lease on a job, renewed while it reads: a killed chunker's job is taken over this soon
    chunker_lease_seconds: int = 60
    # a failed chunk's next try: doubling from the first delay with each receive, at most the longest
    chunk_retry_first_seconds: int = 2
    chunk_retry_longest_seconds: int = 60
    # the sweeper: writers silent this long with chunks unstaged are stalled; how often it relaunches a
    # chunker or re-sends chunks before it fails the job; how long per-job metric groups stay on the Pushgateway
    sweep_stall_seconds: int = 180
    sweep_max_chunker_runs: int = 3
    sweep_max_resends: int = 5
    job_metrics_retention_seconds: int = 86400

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            jobs_table=env.get("JOBS_TABLE", ""),
            import_bucket=env.get("IMPORT_BUCKET", ""),
            chunk_queue_url=env.get("CHUNK_QUEUE_URL", ""),
            database_url=env.get("DATABASE_URL", ""),
            database_secret_arn=env.get("DATABASE_SECRET_ARN", ""),
            chunker_function_name=env.get("CHUNKER_FUNCTION_NAME", ""),
            chunk_records=_int(env, "CHUNK_RECORDS", 1000),
            max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", 10 * 1024 * 1024),
            presign_ttl_seconds=_int(env, "PRESIGN_TTL_SECONDS", 3600),
            idempotency_ttl_seconds=_int(env, "IDEMPOTENCY_TTL_SECONDS", 86400),
            allow_http_urls=_bool(env, "ALLOW_HTTP_URLS", False),
            url_timeout_seconds=_int(env, "URL_TIMEOUT_SECONDS", 30),
            url_allowed_hosts=env.get("URL_ALLOWED_HOSTS", ""),
            url_denied_ports=_ports(env, "URL_DENIED_PORTS"),
            max_url_redirects=_int(env, "MAX_URL_REDIRECTS", 3),
            max_source_bytes=_int(env, "MAX_SOURCE_BYTES", 5 * 1024**3),
            url_max_seconds=_int(env, "URL_MAX_SECONDS", 840),
            max_record_bytes=_int(env, "MAX_RECORD_BYTES", 1024 * 1024),
            export_bucket=env.get("EXPORT_BUCKET", ""),
            state_machine_arn=env.get("EXPORT_STATE_MACHINE_ARN", ""),
            pushgateway_url=env.get("PUSHGATEWAY_URL", ""),
            max_decompressed_bytes=_int(env, "MAX_DECOMPRESSED_BYTES", 10 * 1024**3),
            max_compression_ratio=_int(env, "MAX_COMPRESSION_RATIO", 100),
            max_records_per_job=_int(env, "MAX_RECORDS_PER_JOB", 1_000_000),
            chunk_max_bytes=_int(env, "CHUNK_MAX_BYTES", 4 * 1024**2),
            chunker_lease_seconds=_int(env, "CHUNKER_LEASE_SECONDS", 60),
            chunk_retry_first_seconds=_int(env, "CHUNK_RETRY_FIRST_SECONDS", 2),
            chunk_retry_longest_seconds=_int(env, "CHUNK_RETRY_LONGEST_SECONDS", 60),
            sweep_stall_seconds=_int(env, "SWEEP_STALL_SECONDS", 180),
            sweep_max_chunker_runs=_int(env, "SWEEP_MAX_CHUNKER_RUNS", 3),
            sweep_max_resends=_int(env, "SWEEP_MAX_RESENDS", 5),
            job_metrics_retention_seconds=_int(env, "JOB_METRICS_RETENTION_SECONDS", 86400),
        )
