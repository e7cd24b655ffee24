"""One frozen settings object, built from config/default.toml, an optional override file and
environment variables (STREAMREC_<SECTION>_<KEY>). Defaults live only in config/default.toml."""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args, get_origin, get_type_hints

# Inside the installed package (a wheel too), not beside the source tree.
DEFAULT_CONFIG = importlib.resources.files("config").joinpath("default.toml")
ENV_PREFIX = "STREAMREC_"


class SettingsError(ValueError):
    """A configuration file or variable is missing, unknown or of the wrong type."""


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str
    security_protocol: str
    sasl_mechanism: str
    sasl_username: str
    sasl_password: str
    ssl_cafile: str
    ssl_certfile: str
    ssl_keyfile: str


@dataclass(frozen=True)
class TopicSettings:
    browse: str
    click: str
    purchase: str
    items: str
    recommendations: str
    dlq: str
    forget: str
    partitions: int
    replication_factor: int
    events_retention_ms: int

    def event_topics(self) -> dict[str, str]:
        """Event type -> topic name."""
        return {"browse": self.browse, "click": self.click, "purchase": self.purchase}


@dataclass(frozen=True)
class AppSettings:
    id: str
    datadir: str
    store: str
    web_enabled: bool
    web_host: str
    web_port: int
    web_token: str
    log_level: str
    commit_interval_s: float
    session_timeout_s: float
    fetch_max_wait_ms: int
    gc_young_objects: int


@dataclass(frozen=True)
class ValidationSettings:
    max_event_bytes: int
    max_item_bytes: int
    max_future_skew_s: float
    max_context_depth: int
    max_id_length: int


@dataclass(frozen=True)
class IngestSettings:
    lateness_ms: float
    behind_wait_ms: float
    max_pending: int


@dataclass(frozen=True)
class ErrorSettings:
    publish_attempts: int
    retry_backoff_ms: float
    budget: int
    budget_window: int
    failpoints: str


@dataclass(frozen=True)
class FeatureSettings:
    sequence_max: int
    purchased_max: int
    windows_s: tuple[int, ...]
    window_buckets: int
    popularity_half_life_s: float
    popularity_max_items: int
    retention_days: float
    retention_sweep_s: float


@dataclass(frozen=True)
class ModelSettings:
    checkpoint: str
    cache_mb: int
    cache_dtype: str
    threads: int


@dataclass(frozen=True)
class RecsSettings:
    k: int
    batch_max: int
    batch_wait_ms: float
    batch_max_behind: int
    batch_wait_behind_ms: float
    exclude_purchased: bool
    source: str
    candidates_recent: int
    candidates_covisit: int
    candidates_model: int
    candidates_popular: int
    explain: bool
    diversity: float


@dataclass(frozen=True)
class CovisitSettings:
    window_s: float
    span: int
    neighbours: int
    max_items: int
    half_life_s: float
    user_items: int


@dataclass(frozen=True)
class RetrievalSettings:
    method: str
    ann_min_items: int
    rebuild_fraction: float
    hnsw_m: int
    hnsw_ef_construction: int
    hnsw_ef_search: int
    target_recall: float
    max_unlisted_items: int
    save_graph: bool


@dataclass(frozen=True)
class DashboardSettings:
    host: str
    port: int
    workers: str
    poll_s: float
    history_s: float
    window_s: float


@dataclass(frozen=True)
class TrainerSettings:
    interval_s: float
    min_events: int
    window_s: float
    window_users: int
    window_user_events: int
    holdout_fraction: float
    tolerance: float
    first_epochs: int
    epochs: int
    lr: float
    threads: int
    nice: int
    host: str
    port: int


@dataclass(frozen=True)
class DataSettings:
    root: str


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings
    topics: TopicSettings
    app: AppSettings
    validation: ValidationSettings
    ingest: IngestSettings
    errors: ErrorSettings
    features: FeatureSettings
    model: ModelSettings
    recs: RecsSettings
    covisit: CovisitSettings
    retrieval: RetrievalSettings
    dashboard: DashboardSettings
    trainer: TrainerSettings
    data: DataSettings

    def replace(self, **sections: Mapping[str, Any]) -> Settings:
        """A copy with some keys changed: ``s.replace(app={"id": "x"})``."""
        changed = {
            name: dataclasses.replace(getattr(self, name), **values)
            for name, values in sections.items()
        }
        return dataclasses.replace(self, **changed)

    def to_env(self) -> dict[str, str]:
        """Every setting as a STREAMREC_* variable: hands these exact settings to a child process."""
        env: dict[str, str] = {}
        for section in dataclasses.fields(self):
            for key, value in vars(getattr(self, section.name)).items():
                if isinstance(value, bool):
                    text = str(value).lower()
                elif isinstance(value, tuple):
                    text = ",".join(map(str, value))
                else:
                    text = str(value)
                env[f"{ENV_PREFIX}{section.name}_{key}".upper()] = text
        return env

    def kafka_client_config(self) -> dict[str, Any]:
        """Connection settings in kafka-python's keyword names."""
        return kafka_client_config(self.kafka)


def kafka_client_config(k: KafkaSettings) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in k.bootstrap_servers.split(",") if s.strip()],
        "security_protocol": k.security_protocol,
    }
    if k.security_protocol.startswith("SASL"):
        cfg.update(
            sasl_mechanism=k.sasl_mechanism,
            sasl_plain_username=k.sasl_username,
            sasl_plain_password=k.sasl_password,
        )
    if k.security_protocol.endswith("SSL"):
        cfg.update(
            ssl_cafile=k.ssl_cafile or None,
            ssl_certfile=k.ssl_certfile or None,
            ssl_keyfile=k.ssl_keyfile or None,
        )
    return cfg


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Check a TOML value, or parse an environment string, as the field's type."""
    if get_origin(typ) is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise SettingsError(f"{where}: expected a list, got {value!r}")
        (elem,) = get_args(typ)[:1]
        return tuple(_coerce(v, elem, where) for v in value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
    elif typ is str:
        if isinstance(value, str):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif typ is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    raise SettingsError(f"{where}: expected {getattr(typ, '__name__', typ)}, got {value!r}")


# Settings that must be positive (> 0) or non-negative (>= 0) for the worker to make sense.
_POSITIVE = {
    "dashboard.port",
    "dashboard.poll_s",
    "dashboard.history_s",
    "dashboard.window_s",
    "trainer.interval_s",
    "trainer.min_events",
    "trainer.window_s",
    "trainer.window_users",
    "trainer.window_user_events",
    "trainer.epochs",
    "trainer.first_epochs",
    "trainer.lr",
    "trainer.threads",
    "trainer.port",
    "topics.partitions",
    "topics.replication_factor",
    "app.web_port",
    "app.commit_interval_s",
    "app.session_timeout_s",
    "app.fetch_max_wait_ms",
    "app.gc_young_objects",
    "validation.max_event_bytes",
    "validation.max_item_bytes",
    "validation.max_context_depth",
    "validation.max_id_length",
    "ingest.max_pending",
    "errors.publish_attempts",
    "errors.budget_window",
    "features.sequence_max",
    "features.purchased_max",
    "features.window_buckets",
    "features.popularity_half_life_s",
    "features.popularity_max_items",
    "features.retention_sweep_s",
    "retrieval.max_unlisted_items",
    "features.windows_s",
    "model.cache_mb",
    "model.threads",
    "recs.k",
    "recs.batch_max",
    "recs.batch_max_behind",
    "covisit.window_s",
    "covisit.span",
    "covisit.neighbours",
    "covisit.max_items",
    "covisit.half_life_s",
    "covisit.user_items",
    "retrieval.ann_min_items",
    "retrieval.rebuild_fraction",
    "retrieval.hnsw_m",
    "retrieval.hnsw_ef_construction",
    "retrieval.hnsw_ef_search",
    "retrieval.target_recall",
}
_NON_NEGATIVE = {
    "trainer.nice",
    "validation.max_future_skew_s",
    "features.retention_days",
    "ingest.lateness_ms",
    "ingest.behind_wait_ms",
    "errors.retry_backoff_ms",
    "errors.budget",
    "recs.batch_wait_ms",
    "recs.batch_wait_behind_ms",
    "recs.candidates_recent",
    "recs.candidates_covisit",
    "recs.candidates_model",
    "recs.candidates_popular",
}
_UNIT = {"recs.diversity", "trainer.holdout_fraction", "trainer.tolerance"}
_CHOICES = {
    "retrieval.method": ("exact", "hnsw", "auto"),
    "model.cache_dtype": ("float16", "bfloat16", "float32"),
    "recs.source": ("auto", "recent", "covisit", "popularity", "heuristic"),
}


def _check_range(name: str, value: Any) -> None:
    if name in _CHOICES and value not in _CHOICES[name]:
        raise SettingsError(f"{name}: must be one of {', '.join(_CHOICES[name])}, got {value!r}")
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            raise SettingsError(f"{name}: must be finite, got {v!r}")
        if name in _POSITIVE and not v > 0:
            raise SettingsError(f"{name}: must be > 0, got {v!r}")
        if name in _NON_NEGATIVE and not v >= 0:
            raise SettingsError(f"{name}: must be >= 0, got {v!r}")
        if name in _UNIT and not 0 <= v <= 1:
            raise SettingsError(f"{name}: must be between 0 and 1, got {v!r}")


def _merge(base: dict[str, dict[str, Any]], override: Mapping[str, Any], source: str) -> None:
    for section, values in override.items():
        if section not in base or not isinstance(values, Mapping):
            raise SettingsError(f"{source}: unknown section [{section}]")
        for key, value in values.items():
            if key not in base[section]:
                raise SettingsError(f"{source}: unknown setting {section}.{key}")
            base[section][key] = value


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings: defaults, then ``config_file`` (or $STREAMREC_CONFIG), then env vars."""
    env = os.environ if env is None else env
    with DEFAULT_CONFIG.open("rb") as f:
        raw: dict[str, dict[str, Any]] = tomllib.load(f)
    extra = config_file or env.get(f"{ENV_PREFIX}CONFIG")
    if extra:
        with open(extra, "rb") as f:
            _merge(raw, tomllib.load(f), str(extra))
    known: set[str] = set()
    for section, values in raw.items():
        for key in values:
            name = f"{ENV_PREFIX}{section}_{key}".upper()
            known.add(name)
            if name in env:
                values[key] = env[name]
    prefixes = tuple(f"{ENV_PREFIX}{section}_".upper() for section in raw)
    for name in env:
        if name.startswith(prefixes) and name not in known:
            # a typo in a variable name would otherwise be silently ignored
            raise SettingsError(f"unknown setting in the environment: {name}")
    hints = get_type_hints(Settings)
    sections: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        cls = hints[field.name]
        values = raw.get(field.name, {})
        kwargs = {}
        for fld in dataclasses.fields(cls):
            if fld.name not in values:
                raise SettingsError(f"missing setting {field.name}.{fld.name}")
            where = f"{field.name}.{fld.name}"
            kwargs[fld.name] = _coerce(values[fld.name], get_type_hints(cls)[fld.name], where)
            _check_range(where, kwargs[fld.name])
        sections[field.name] = cls(**kwargs)
    return Settings(**sections)
