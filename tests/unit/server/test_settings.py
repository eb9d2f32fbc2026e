"""Settings come from an explicit mapping and fail with one line naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import Environment, SettingsError, load_settings


def test_defaults_use_embedded_database_and_local_blobs() -> None:
    settings = load_settings({})
    assert settings.embedded_database
    assert settings.s3 is None
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.blob_dir == Path("var") / "blobs"
    assert settings.secret_key == ""  # development generates one into the data directory
    assert settings.generated_master_key_file == Path("var") / "master.key"


def test_database_url_is_used_when_set() -> None:
    settings = load_settings({"FAIRWATCH_DATABASE_URL": "postgresql://fw@db.internal:5432/fw"})
    assert not settings.embedded_database
    assert settings.database_url == "postgresql://fw@db.internal:5432/fw"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"FAIRWATCH_DATABASE_URL": "mysql://x@y/z"}, "FAIRWATCH_DATABASE_URL"),
        ({"FAIRWATCH_DATABASE_URL": "postgresql://u@host:notaport/db"}, "FAIRWATCH_DATABASE_URL"),
        ({"FAIRWATCH_DATABASE_URL": "postgresql:///nohost"}, "FAIRWATCH_DATABASE_URL"),
        ({"FAIRWATCH_PORT": "eighty"}, "FAIRWATCH_PORT"),
        ({"FAIRWATCH_PORT": "70000"}, "FAIRWATCH_PORT"),
        ({"FAIRWATCH_ENV": "staging"}, "FAIRWATCH_ENV"),
        ({"FAIRWATCH_LOG_JSON": "maybe"}, "FAIRWATCH_LOG_JSON"),
        ({"FAIRWATCH_LOG_LEVEL": "LOUD"}, "FAIRWATCH_LOG_LEVEL"),
        ({"FAIRWATCH_S3_ENDPOINT": "minio:9000"}, "FAIRWATCH_S3_ACCESS_KEY"),
        (
            {"FAIRWATCH_S3_ENDPOINT": "minio:9000", "FAIRWATCH_S3_ACCESS_KEY": "k"},
            "FAIRWATCH_S3_SECRET_KEY",
        ),
        ({"FAIRWATCH_S3_ENDPOINT": "ftp://minio"}, "FAIRWATCH_S3_ENDPOINT"),
        ({"FAIRWATCH_DB_POOL_MIN": "5", "FAIRWATCH_DB_POOL_MAX": "2"}, "FAIRWATCH_DB_POOL_MAX"),
        ({"FAIRWATCH_ENV": "production"}, "FAIRWATCH_DATABASE_URL"),
        (
            {"FAIRWATCH_ENV": "production", "FAIRWATCH_DATABASE_URL": "postgresql://a@b/c"},
            "FAIRWATCH_SECRET_KEY",
        ),
        (
            {
                "FAIRWATCH_ENV": "production",
                "FAIRWATCH_DATABASE_URL": "postgresql://a@b/c",
                "FAIRWATCH_SECRET_KEY": "k" * 40,
            },
            "FAIRWATCH_MASTER_KEY",
        ),
        (
            {"FAIRWATCH_MASTER_KEY": "abc", "FAIRWATCH_MASTER_KEY_FILE": "/x"},
            "FAIRWATCH_MASTER_KEY_FILE",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}: ")
    assert "\n" not in str(info.value)


def test_s3_endpoint_as_url_sets_tls_flag() -> None:
    settings = load_settings(
        {
            "FAIRWATCH_S3_ENDPOINT": "http://127.0.0.1:9000",
            "FAIRWATCH_S3_ACCESS_KEY": "access",
            "FAIRWATCH_S3_SECRET_KEY": "secret-value",
            "FAIRWATCH_S3_BUCKET": "Attachments",
        }
    )
    assert settings.s3 is not None
    assert settings.s3.endpoint == "127.0.0.1:9000"
    assert settings.s3.secure is False
    assert settings.s3.bucket == "attachments"


def test_secrets_stay_out_of_repr() -> None:
    settings = load_settings(
        {
            "FAIRWATCH_DATABASE_URL": "postgresql://fw:hunter2hunter2@db:5432/fw",
            "FAIRWATCH_S3_ENDPOINT": "minio:9000",
            "FAIRWATCH_S3_ACCESS_KEY": "access",
            "FAIRWATCH_S3_SECRET_KEY": "topsecretkey",
            "FAIRWATCH_SECRET_KEY": "x" * 40,
        }
    )
    text = repr(settings)
    assert "hunter2hunter2" not in text
    assert "topsecretkey" not in text
    assert "x" * 40 not in text
    assert "***" in text


def test_production_accepts_complete_configuration() -> None:
    settings = load_settings(
        {
            "FAIRWATCH_ENV": "production",
            "FAIRWATCH_DATABASE_URL": "postgresql://fw@db/fw",
            "FAIRWATCH_SECRET_KEY": "s" * 48,
            "FAIRWATCH_MASTER_KEY_FILE": "/run/secrets/fairwatch-master.key",
        }
    )
    assert settings.environment is Environment.PRODUCTION
    assert settings.generated_master_key_file is None
    assert settings.create_demo is False
