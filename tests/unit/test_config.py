"""bulkio.config: one typed model of the functions' environment, its parsing (blank is unset, switch words, port and
role lists), errors that name the variable, and the README's table of variables kept in step with it."""

from __future__ import annotations

import re

import pytest
from bulkio.adapters.tokens import AuthSettings
from bulkio.config import ConfigError, Settings
from bulkio.domain.records import ValidationRules

from infra.local.stack import REPOSITORY_ROOT
from infra.local.template import load_template

SECRET = "a-test-secret-that-is-long-enough-for-hs256-0123456789"
ISSUER = "https://issuer.example"
AUDIENCE = "bulkio"

# Variables the functions' table in the README lists (or template.yaml sets) that something other than
# bulkio.config reads, so they are not fields of Settings.
READ_ELSEWHERE = {
    "AWS_LAMBDA_EXEC_WRAPPER": "the Lambda runtime: starts the streaming export's runtime",
    "AWS_ENDPOINT_URL": "boto3: the local stacks point it at their AWS endpoint",
    "LOG_LEVEL": "Powertools Logger",
    "POWERTOOLS_SERVICE_NAME": "Powertools Logger",
}


# ---------------------------------------------------------------- defaults


def test_an_empty_environment_gives_the_defaults() -> None:
    settings = Settings.from_env({})

    assert (settings.jobs_table, settings.import_bucket, settings.chunk_queue_url) == ("", "", "")
    assert (settings.database_url, settings.database_secret_arn, settings.chunker_function_name) == ("", "", "")
    assert (settings.export_bucket, settings.state_machine_arn, settings.pushgateway_url) == ("", "", "")
    assert settings.chunk_records == 1000
    assert settings.chunk_max_bytes == 4 * 1024**2 == 4194304
    assert settings.max_upload_bytes == 10 * 1024 * 1024 == 10485760
    assert settings.max_record_bytes == 1024 * 1024
    assert settings.presign_ttl_seconds == 3600
    assert settings.idempotency_ttl_seconds == 86400
    assert settings.max_decompressed_bytes == 10 * 1024**3
    assert settings.max_compression_ratio == 100
    assert settings.max_records_per_job == 1_000_000
    assert settings.allow_http_urls is False
    assert settings.url_timeout_seconds == 30
    assert settings.url_allowed_hosts == ""
    assert settings.url_denied_ports == frozenset()
    assert settings.max_url_redirects == 3
    assert settings.max_source_bytes == 5 * 1024**3
    assert settings.url_max_seconds == 840
    assert settings.chunker_lease_seconds == 60
    assert (settings.chunk_retry_first_seconds, settings.chunk_retry_longest_seconds) == (2, 60)
    assert settings.sweep_stall_seconds == 180
    assert (settings.sweep_max_chunker_runs, settings.sweep_max_resends) == (3, 5)
    assert settings.job_metrics_retention_seconds == 86400
    assert settings.user_roles == {"admin", "author", "reader"}
    assert settings.auth() == AuthSettings("", "", "", "", 30, "")
    assert settings.validation_rules() == ValidationRules()


def test_settings_built_in_code_take_the_defaults_not_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHUNK_RECORDS", "7")

    assert Settings(jobs_table="jobs").chunk_records == 1000
    assert Settings.from_env().chunk_records == 7


def test_a_variable_may_be_named_other_than_its_field() -> None:
    arn = "arn:aws:states:eu-west-1:123456789012:stateMachine:exports"

    assert Settings.from_env({"EXPORT_STATE_MACHINE_ARN": arn}).state_machine_arn == arn
    assert Settings(state_machine_arn=arn).state_machine_arn == arn


def test_the_database_url_and_the_token_secret_stay_out_of_the_repr() -> None:
    settings = Settings.from_env({"DATABASE_URL": "postgresql://bulkio:hunter2@db/bulkio", "AUTH_JWT_SECRET": SECRET})

    assert "hunter2" not in repr(settings)
    assert SECRET not in repr(settings)


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_number_switch_or_list_keeps_its_default(blank: str) -> None:
    settings = Settings.from_env(
        {"CHUNK_RECORDS": blank, "ALLOW_HTTP_URLS": blank, "URL_DENIED_PORTS": blank, "USER_ROLES": blank}
    )

    assert (settings.chunk_records, settings.allow_http_urls) == (1000, False)
    assert (settings.url_denied_ports, settings.user_roles) == (frozenset(), {"admin", "author", "reader"})


def test_numbers_are_read_as_python_reads_them() -> None:
    assert Settings.from_env({"CHUNK_RECORDS": " 250 "}).chunk_records == 250
    assert Settings.from_env({"MAX_RECORDS_PER_JOB": "2_000_000"}).max_records_per_job == 2_000_000


@pytest.mark.parametrize("word", ["1", "true", "yes", "on", "TRUE", " Yes ", "On"])
def test_a_switch_is_on_for_1_true_yes_or_on(word: str) -> None:
    assert Settings.from_env({"ALLOW_HTTP_URLS": word}).allow_http_urls is True


@pytest.mark.parametrize("word", ["0", "false", "no", "off", "enabled"])
def test_a_switch_is_off_for_any_other_word(word: str) -> None:
    assert Settings.from_env({"ALLOW_HTTP_URLS": word}).allow_http_urls is False


@pytest.mark.parametrize("value", ["abc", "1.5", "10MB"])
def test_a_number_that_is_not_one_names_the_variable_its_value_and_what_fits(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CHUNK_RECORDS": value})

    expected = f"invalid configuration: CHUNK_RECORDS is {value!r}: expected a whole number (digits only)"
    assert str(caught.value) == expected


def test_every_bad_variable_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CHUNK_RECORDS": "abc", "AUTH_LEEWAY_SECONDS": "soon", "JOBS_TABLE": "jobs"})

    assert "CHUNK_RECORDS is 'abc'" in str(caught.value)
    assert "AUTH_LEEWAY_SECONDS is 'soon'" in str(caught.value)
    assert "JOBS_TABLE" not in str(caught.value)


def test_denied_ports_are_a_comma_separated_list() -> None:
    assert Settings.from_env({"URL_DENIED_PORTS": "4566, 3000,,54329"}).url_denied_ports == {4566, 3000, 54329}
    assert Settings.from_env({"URL_DENIED_PORTS": "1,65535"}).url_denied_ports == {1, 65535}


@pytest.mark.parametrize(("value", "bad"), [("0", "0"), ("4566,65536", "65536"), ("-1", "-1"), ("4566, aws", "aws")])
def test_a_denied_port_that_is_not_a_port_names_url_denied_ports(value: str, bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"URL_DENIED_PORTS": value})

    assert str(caught.value) == (
        f"invalid configuration: URL_DENIED_PORTS is {value!r}: "
        f"expected comma-separated port numbers (1-65535), but {bad!r} is not one"
    )


def test_user_roles_are_comma_separated_and_none_keeps_the_default_roles() -> None:
    assert Settings.from_env({"USER_ROLES": " editor , viewer ,"}).user_roles == {"editor", "viewer"}
    assert Settings.from_env({"USER_ROLES": " , "}).user_roles == {"admin", "author", "reader"}


def test_validation_rules_take_the_user_roles() -> None:
    """Moved from test_records (ValidationRules.from_env is gone: the domain reads no environment)."""
    assert Settings.from_env({"USER_ROLES": " editor , viewer ,"}).validation_rules().user_roles == {"editor", "viewer"}
    assert Settings.from_env({}).validation_rules() == ValidationRules()


# ---------------------------------------------------------------- bearer tokens (moved from test_tokens)


def test_auth_settings_read_every_auth_variable() -> None:
    settings = Settings.from_env(
        {
            "AUTH_JWT_SECRET": SECRET,
            "AUTH_JWKS_URL": "https://issuer.example/.well-known/jwks.json",
            "AUTH_ISSUER": ISSUER,
            "AUTH_AUDIENCE": AUDIENCE,
            "AUTH_LEEWAY_SECONDS": "5",
            "AUTH_SCOPE_PREFIX": "bulkio/",
        }
    ).auth()

    assert settings == AuthSettings(
        jwt_secret=SECRET,
        jwks_url="https://issuer.example/.well-known/jwks.json",
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway_seconds=5,
        scope_prefix="bulkio/",
    )


def test_auth_settings_from_an_empty_environment_configure_nothing_with_a_30_second_leeway() -> None:
    assert Settings.from_env({}).auth() == AuthSettings("", "", "", "", 30)
    assert Settings.from_env({"AUTH_LEEWAY_SECONDS": ""}).auth().leeway_seconds == 30


def test_auth_settings_leeway_zero_is_kept() -> None:
    assert Settings.from_env({"AUTH_LEEWAY_SECONDS": "0"}).auth().leeway_seconds == 0


def test_settings_default_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    monkeypatch.setenv("AUTH_ISSUER", ISSUER)
    monkeypatch.delenv("AUTH_JWKS_URL", raising=False)
    monkeypatch.delenv("AUTH_AUDIENCE", raising=False)
    monkeypatch.delenv("AUTH_LEEWAY_SECONDS", raising=False)

    settings = Settings.from_env().auth()

    assert (settings.jwt_secret, settings.issuer, settings.jwks_url, settings.audience) == (SECRET, ISSUER, "", "")


# ---------------------------------------------------------------- the README and template.yaml


def readme_functions_table() -> dict[str, str]:
    """The first table of the README's Configuration section (what the functions read): each variable its row
    names, with the row's default cell."""
    section = (REPOSITORY_ROOT / "README.md").read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("\n\n| variable |", 1)[1].split("\n\n", 1)[0]
    defaults: dict[str, str] = {}
    for row in table.splitlines()[2:]:
        names, default = row.split(" | ")[:2]
        for variable in re.findall(r"`([A-Z][A-Z0-9_]*)`", names):
            defaults[variable] = default
    return defaults


def test_every_setting_is_in_the_readme_and_every_variable_there_is_a_setting() -> None:
    documented = set(readme_functions_table())
    variables = set(Settings.variables().values())

    assert variables - documented == set(), "settings missing from the README's Configuration table"
    assert documented - variables - set(READ_ELSEWHERE) == set(), "README variables that are no setting"


def test_the_readme_gives_each_number_switch_and_list_its_default() -> None:
    documented = readme_functions_table()
    for name, variable in Settings.variables().items():
        default = Settings.model_fields[name].default
        cell = documented[variable]
        if isinstance(default, bool):
            assert str(default).lower() in cell.lower(), variable
        elif isinstance(default, int):
            assert str(default) in re.findall(r"\d+", cell), variable
        elif isinstance(default, frozenset) and default:
            assert ",".join(sorted(default)) in cell, variable


def test_every_variable_template_yaml_gives_a_function_is_a_setting() -> None:
    stack = load_template(REPOSITORY_ROOT / "template.yaml", parameter_overrides={"DatabaseUrl": ""})
    variables = set(Settings.variables().values())

    for function in stack.functions.values():
        assert set(function.environment) - variables - set(READ_ELSEWHERE) == set(), function.logical_id
