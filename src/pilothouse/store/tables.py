"""SQLAlchemy Core tables: one schema for SQLite and PostgreSQL.

Times are BIGINT nanoseconds since the epoch; rollup buckets are BIGINT seconds (bucket start).
The migrations in ``migrations/versions`` create exactly these tables; a test checks they agree.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import postgresql

from pilothouse.domain.rollups import ROLLUP_SUMS

metadata = MetaData()

projects = Table(
    "projects",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("retention_days", Integer),  # traces older than this are deleted (NULL: kept for ever)
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("prefix", String(32), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("scopes", String(200), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("revoked_ns", BigInteger),
    Column("models", Text),  # comma-separated allow-list; NULL: every model
    Column("rpm", Integer),
    Column("tpm", Integer),
)

# A trace's integer key: the rowid on SQLite (INTEGER PRIMARY KEY), a bigserial on PostgreSQL.
TRACE_PK = BigInteger().with_variant(Integer, "sqlite")


# PostgreSQL: the traces' indexed text columns compare byte by byte (the "C" collation, migration 0034),
# not by the database's collation (strcoll on each comparison); equality is the same.
def _c_text(length: int | None = None) -> Any:
    plain = Text() if length is None else String(length)
    return plain.with_variant(
        Text(collation="C") if length is None else String(length, collation="C"), "postgresql"
    )


# The columns the Users page sums over a user's traces (pilothouse.store.sql.SqlStore.activity).
USER_SUMS = ("end_ns", "total_tokens", "cost_usd", "error_count")

traces = Table(
    "traces",
    metadata,
    # Spans refer to their trace by this key. New traces get ever larger keys, so a batch's span
    # rows land at the end of the spans' (trace_pk, span_id) index instead of all over a
    # (project, trace id) one: random OTLP trace ids made each batch rewrite nearly every page of it.
    Column("pk", TRACE_PK, primary_key=True, autoincrement=True),
    Column("project_id", _c_text(64), nullable=False),
    Column("id", _c_text(32), nullable=False),
    Column("name", Text),
    Column("root_span_id", String(16)),
    Column("user_id", _c_text()),
    Column("session_id", _c_text()),
    Column("tags", Text),  # JSON list
    Column("metadata", Text),  # JSON object
    Column("environment", _c_text()),
    Column("release", _c_text()),
    Column("input", Text),
    Column("output", Text),
    Column("model", Text),
    Column("start_ns", BigInteger, nullable=False),
    Column("end_ns", BigInteger, nullable=False),
    Column("observation_count", Integer, nullable=False),
    Column("error_count", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("total_tokens", BigInteger, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("unpriced_count", Integer, nullable=False),  # model calls whose cost is unknown
    UniqueConstraint("project_id", "id", name="uq_traces_id"),
    # Ties in time are broken by the key (smaller entries than the 32-character id).
    Index("ix_traces_time", "project_id", "start_ns", "pk"),
    # Only traces with a session (a user) are in these: every query through them names one.
    Index(
        "ix_traces_session",
        "project_id",
        "session_id",
        "start_ns",
        "pk",
        sqlite_where=text("session_id IS NOT NULL"),
        postgresql_where=text("session_id IS NOT NULL"),
    ),
    # It holds what the Users page sums per user as well (migration 0029): a month of a busy user's
    # traces is summed from the index, not read row by row from the table.
    Index(
        "ix_traces_user",
        "project_id",
        "user_id",
        "start_ns",
        "pk",
        *USER_SUMS,
        sqlite_where=text("user_id IS NOT NULL"),
        postgresql_where=text("user_id IS NOT NULL"),
    ),
    # The trace list's environment and release filters (migration 0028); traces without one (most
    # clients send neither) are in neither index.
    *(
        Index(
            f"ix_traces_{column}",
            "project_id",
            column,
            "start_ns",
            "pk",
            sqlite_where=text(f"{column} IS NOT NULL"),
            postgresql_where=text(f"{column} IS NOT NULL"),
        )
        for column in ("environment", "release")
    ),
)

# Span texts: TEXT on SQLite (holding str or packed bytes), BYTEA on PostgreSQL (UTF-8 or packed bytes):
# see pilothouse.store.rows.pack_bytes.
SPAN_TEXT = Text().with_variant(LargeBinary(), "postgresql")

spans = Table(
    "spans",
    metadata,
    # On PostgreSQL a bigint with no index: spans are partitioned there (migration 0027), and their
    # unique key is (trace_pk, span_id, start_ns); test_migrations_match_the_tables allows for both.
    Column("pk", TRACE_PK, primary_key=True, autoincrement=True),
    Column("project_id", String(64), nullable=False),
    Column("trace_pk", TRACE_PK, nullable=False),  # traces.pk of its trace
    Column("span_id", String(16), nullable=False),
    Column("parent_id", String(16)),
    Column("kind", String(16), nullable=False),
    Column("name", Text, nullable=False),
    Column("start_ns", BigInteger, nullable=False),
    Column("end_ns", BigInteger, nullable=False),
    Column("status", String(8), nullable=False),
    Column("status_message", Text),
    Column("input", SPAN_TEXT),
    Column("output", SPAN_TEXT),
    Column("attributes", SPAN_TEXT),  # JSON object: what no column holds
    Column("provider", Text),
    Column("request_model", Text),
    Column("model", Text),
    Column("model_parameters", Text),  # JSON object
    Column("input_tokens", Integer),
    Column("output_tokens", Integer),
    Column("cache_read_tokens", Integer),
    Column("cache_write_tokens", Integer),
    Column("reasoning_tokens", Integer),
    Column("cost_usd", Float),  # NULL: unknown (never 0 for "no price")
    Column("cost_details", Text),  # JSON object of line items
    Column("price_version", Text),
    Column("ttft_ns", BigInteger),
    Column("prompt_name", Text),
    Column("prompt_version", Text),
    Column("key_id", String(32)),  # the virtual key of a gateway call
    Column("saved_usd", Float),  # what caching (provider prompt cache, gateway cache) saved on this call
    UniqueConstraint("trace_pk", "span_id", name="uq_spans_trace_span"),
)

budgets = Table(
    "budgets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("scope", String(16), nullable=False),  # project | key | user | tag
    Column("scope_value", Text, nullable=False),  # "" for a project budget
    Column("period", String(8), nullable=False),  # day | week | month | total
    Column("limit_usd", Float, nullable=False),
    Column("hard", Boolean, nullable=False),
    Column("alert_thresholds", Text, nullable=False),  # comma-separated fractions
    Column("webhook_url", Text),
    Column("created_ns", BigInteger, nullable=False),
    Index("ix_budgets_project", "project_id", "scope"),
)

scores = Table(
    "scores",
    metadata,
    Column("id", String(32), nullable=False),  # unique per project (migration 0010)
    Column("project_id", String(64), nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("observation_id", String(16)),
    Column("name", Text, nullable=False),
    Column("data_type", String(16), nullable=False),
    Column("value", Float),
    Column("string_value", Text),
    Column("source", String(16), nullable=False),
    Column("comment", Text),
    Column("created_ns", BigInteger, nullable=False),
    # who wrote it: key:NAME, admin or a reviewer's user name; NULL: no caller (online) or before 0035
    Column("author", String(200)),
    PrimaryKeyConstraint("project_id", "id", name="pk_scores_project_id_id"),
    Index("ix_scores_trace", "project_id", "trace_id"),
)


# A histogram is an int64 array on PostgreSQL and the same packed little-endian on SQLite.
LATENCY_HIST = LargeBinary().with_variant(postgresql.ARRAY(BigInteger), "postgresql")


_FLOAT_SUMS = frozenset({"cost_usd", "latency_ms_sum", "saved_usd"})
# sums added by later migrations: rows stored before them count 0
_LATER_SUMS = frozenset({"refused", "saved_usd"})  # 0020, 0029


def _sum_columns() -> list[Column[Any]]:
    # the sums: counts and tokens are whole numbers; the amounts (USD) and the latency sum are not.
    return [
        Column(
            sum_,
            Float if sum_ in _FLOAT_SUMS else BigInteger,
            nullable=False,
            server_default=text("0") if sum_ in _LATER_SUMS else None,
        )
        for sum_ in ROLLUP_SUMS
    ]


# PostgreSQL: pages filled to 70% (migration 0033), so that a batch's updates of a rollup row find room
# on its page (HOT updates: no new entry in the primary key's index).
_ROLLUP_STORAGE: dict[str, Any] = {"postgresql_with": {"fillfactor": 70}}


def _rollup_table(name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("project_id", String(64), primary_key=True),
        Column("bucket", BigInteger, primary_key=True),
        Column("model", Text, primary_key=True),
        Column("name", Text, primary_key=True),
        *_sum_columns(),
        # the latency sketch (pilothouse.domain.sketch): counts per bucket, merged by ph_hist_add()
        Column("latency_hist", LATENCY_HIST, nullable=False),
        # the same sketch of the streamed calls' time to first token (migration 0029); NULL: none
        Column("ttft_hist", LATENCY_HIST),
        **_ROLLUP_STORAGE,
    )


# Model calls (generations, embeddings) summed per minute and per hour at ingest time, so that
# dashboards read thousands of rows rather than millions of spans.
# "Top traces" over a long range walk these, costliest (slowest) first, instead of sorting the range
# (pilothouse.store.analytics.AnalyticsQueries.top_traces).
Index("ix_traces_cost", traces.c.project_id, traces.c.cost_usd, traces.c.start_ns)
Index("ix_traces_latency", traces.c.project_id, (traces.c.end_ns - traces.c.start_ns), traces.c.start_ns)
# The trace list sorted by tokens (migration 0028), as by cost and latency above.
Index("ix_traces_tokens", traces.c.project_id, traces.c.total_tokens, traces.c.start_ns)

rollup_minute = _rollup_table("rollup_minute")
rollup_hour = _rollup_table("rollup_hour")

ROLLUPS = ((60, rollup_minute), (3600, rollup_hour))


def _dim_rollup_table(name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("project_id", String(64), primary_key=True),
        Column("bucket", BigInteger, primary_key=True),
        Column("dimension", String(16), primary_key=True),  # user, key, prompt, tag
        Column("value", Text, primary_key=True),  # "" for none (no user, no key, untagged)
        *_sum_columns(),
        Column("latency_hist", LATENCY_HIST, nullable=False),
        **_ROLLUP_STORAGE,
    )


# The same sums per (dimension, value): exact breakdowns by end user, key, prompt version and tag
# (pilothouse.domain.rollups.DIMENSIONS) without reading spans.
rollup_dim_minute = _dim_rollup_table("rollup_dim_minute")
rollup_dim_hour = _dim_rollup_table("rollup_dim_hour")
rollup_dim_day = _dim_rollup_table("rollup_dim_day")  # UTC days

DIM_ROLLUPS = ((60, rollup_dim_minute), (3600, rollup_dim_hour), (86400, rollup_dim_day))


# -- evals: datasets (each version a snapshot of its items), runs, results, scores, response cache ----

eval_datasets = Table(
    "eval_datasets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text),
    Column("created_ns", BigInteger, nullable=False),
    UniqueConstraint("project_id", "name", name="uq_eval_datasets_name"),
)

eval_dataset_versions = Table(
    "eval_dataset_versions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("dataset_id", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("item_count", Integer, nullable=False),
    Column("fingerprint", String(64), nullable=False),  # sha256 of the items: same items, same version
    Column("source", Text),  # the file or the trace filters it came from
    Column("created_ns", BigInteger, nullable=False),
    UniqueConstraint("dataset_id", "version", name="uq_eval_dataset_versions"),
)

eval_items = Table(
    "eval_items",
    metadata,
    Column("version_id", String(32), primary_key=True),
    Column("position", Integer, primary_key=True),  # 1-based order in the version
    Column("item_id", Text, nullable=False),
    Column("input", Text),  # JSON object of template variables
    Column("messages", Text),  # JSON list (a chat item)
    Column("expected", Text),  # JSON
    Column("metadata", Text),  # JSON object
    Column("source_trace_id", String(32)),
    UniqueConstraint("version_id", "item_id", name="uq_eval_items_id"),
)

eval_runs = Table(
    "eval_runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("name", Text),
    Column("status", String(16), nullable=False),  # running | completed | interrupted | failed
    Column("spec", Text, nullable=False),  # JSON, secrets redacted
    Column("dataset", Text),
    Column("dataset_version_id", String(32)),
    Column("dataset_version", Integer),
    Column("target", Text, nullable=False),
    Column("epochs", Integer, nullable=False),
    Column("items_total", Integer),
    Column("scorers", Text, nullable=False),  # JSON list of scorer names
    Column("summary", Text),  # JSON (pilothouse.domain.evals.RunSummary)
    Column("created_ns", BigInteger, nullable=False),
    Column("finished_ns", BigInteger),
    Index("ix_eval_runs_project", "project_id", "created_ns"),
)

eval_results = Table(
    "eval_results",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("item_id", Text, primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("position", Integer, nullable=False),
    Column("output", Text),
    Column("error", Text),  # the target failed: every score of the row is unmeasured
    Column("latency_ms", Float),
    Column("input_tokens", Integer),  # the target call's
    Column("output_tokens", Integer),
    Column("cost_usd", Float),  # NULL: unknown
    Column("judge_input_tokens", Integer),  # all judge calls of the row
    Column("judge_output_tokens", Integer),
    Column("judge_cost_usd", Float),
    Column("trace_id", String(32)),
    Column("cached", Boolean, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Index("ix_eval_results_order", "run_id", "position", "epoch"),
)

eval_scores = Table(
    "eval_scores",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("scorer", Text, primary_key=True),
    Column("item_id", Text, primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("value", Float),  # NULL: unmeasured
    Column("passed", Boolean),
    Column("error", Text),
    Column("reason", Text),
    # the scorer's details as JSON (spans, verdicts; at most 64 KiB: domain/score_details.py), packed
    # on SQLite; NULL: none, or a run stored before migration 0031
    Column("details", Text),
)

eval_cache = Table(
    "eval_cache",
    metadata,
    Column("key", String(64), primary_key=True),  # sha256 of target identity, request and epoch
    Column("output", Text, nullable=False),
    Column("input_tokens", Integer),
    Column("output_tokens", Integer),
    Column("cost_usd", Float),
    Column("latency_ms", Float),
    Column("created_ns", BigInteger, nullable=False),
)

gate_looks = Table(  # each look of the quality gate at a (baseline run, candidate configuration) pair
    "gate_looks",
    metadata,
    Column("project_id", String(64), primary_key=True),
    Column("pair_key", String(64), primary_key=True),  # sha256 of baseline run id + candidate config
    Column("candidate_run_id", String(32), primary_key=True),
    # sha256 prefix of the gate's settings (alpha, margins, metrics, directions, groups): gating the
    # same runs with other settings is another look, so settings cannot be tried until one passes
    Column("settings_key", String(32), primary_key=True),
    Column("look", Integer, nullable=False),  # 1, 2, ... in the order the looks were recorded
    Column("baseline_run_id", String(32), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    UniqueConstraint("project_id", "pair_key", "look", name="uq_gate_looks_look"),
)

judge_calibrations = Table(
    "judge_calibrations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),  # sha256 of the scorer spec and judge identity
    Column("version", Integer, nullable=False),  # 1, 2, ... per project and fingerprint
    Column("scorer_name", Text, nullable=False),
    Column("scorer_type", String(64), nullable=False),
    Column("judge_model", Text),
    Column("identity", Text, nullable=False),  # JSON: what the fingerprint is a digest of
    Column("metrics", Text, nullable=False),  # JSON (pilothouse.evals.calibration.CalibrationMetrics)
    Column("n", Integer, nullable=False),  # labelled items
    Column("judgements", Text),  # JSON list, one verdict per item (packed on SQLite when long)
    Column("labels_sha256", String(64), nullable=False),
    Column("labels_source", Text),  # the labels file, as given
    Column("judge_endpoint", Text),  # where the judge calls went (the deployments behind an alias)
    Column("created_ns", BigInteger, nullable=False),
    UniqueConstraint("project_id", "fingerprint", "version", name="uq_judge_calibrations_version"),
    Index("ix_judge_calibrations_created", "project_id", "created_ns"),
)

# Web UI sessions ended by logging out, until their cookie would have expired anyway (migration 0011).
revoked_sessions = Table(
    "revoked_sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("expires_ns", BigInteger, nullable=False),
)

# The prompt registry (migration 0013). A version never changes once stored; a label points at one
# version; every change is an event, numbered by ``seq`` in commit order, which is what gateway
# processes poll (or hear on Redis) to learn that a label moved.
prompt_versions = Table(
    "prompt_versions",
    metadata,
    Column("project_id", String(64), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),  # 1, 2, ... per project and name
    Column("kind", String(8), nullable=False),  # text | chat
    Column("template", Text, nullable=False),  # JSON: a string or a list of messages
    Column("config", Text, nullable=False),  # JSON: model, parameters, tools, response_format
    Column("message", Text),
    Column("created_by", Text),
    Column("created_ns", BigInteger, nullable=False),
)

prompt_labels = Table(
    "prompt_labels",
    metadata,
    Column("project_id", String(64), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("label", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_by", Text),
    Column("updated_ns", BigInteger, nullable=False),
    # a canary: this share (0..1) of the label's traffic, sticky per end user, gets canary_version
    Column("canary_version", Integer),
    Column("canary_share", Float),
)

prompt_events = Table(
    "prompt_events",
    metadata,
    Column("seq", TRACE_PK, primary_key=True, autoincrement=True),
    Column("project_id", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("action", String(16), nullable=False),  # create | label | promote | refuse
    Column("version", Integer),
    Column("label", String(64)),
    Column("previous_version", Integer),
    Column("actor", Text),
    Column("detail", Text),  # JSON object (a promotion's verdict and runs)
    Column("created_ns", BigInteger, nullable=False),
    Index("ix_prompt_events_name", "project_id", "name", "seq"),
)

# -- human review (migration 0016): reviewers, score configs, annotation queues, items, reviews ---------

review_users = Table(  # people who log in to review, with a scrypt hash of their password
    "review_users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("username", String(64), nullable=False),
    Column("display_name", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("disabled_ns", BigInteger),
    UniqueConstraint("project_id", "username", name="uq_review_users_name"),
)

score_configs = Table(
    "score_configs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("name", String(100), nullable=False),
    Column("kind", String(16), nullable=False),  # numeric | categorical | boolean
    Column("description", Text),
    Column("min_value", Float),
    Column("max_value", Float),
    Column("categories", Text),  # JSON list of labels
    Column("created_ns", BigInteger, nullable=False),
    UniqueConstraint("project_id", "name", name="uq_score_configs_name"),
)

review_queues = Table(
    "review_queues",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("name", String(100), nullable=False),
    Column("description", Text),
    Column("configs", Text, nullable=False),  # JSON list of score config names
    Column("reviews_per_item", Integer, nullable=False),
    Column("lease_seconds", Integer, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    UniqueConstraint("project_id", "name", name="uq_review_queues_name"),
)

review_items = Table(
    "review_items",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("queue_id", String(32), nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("reason", Text),
    Column("source", String(16), nullable=False),  # filter | manual | online | detector | api
    Column("status", String(16), nullable=False),  # pending | completed
    Column("spans", Text),  # JSON list of [start, end] character offsets into the response
    Column("lease_owner", Text),  # the reviewer holding the item, until lease_until_ns
    Column("lease_until_ns", BigInteger),
    Column("reviews", Integer, nullable=False),  # reviews (not skips) so far
    Column("created_ns", BigInteger, nullable=False),
    UniqueConstraint("queue_id", "trace_id", name="uq_review_items_trace"),
    Index("ix_review_items_queue", "queue_id", "status", "created_ns"),
)

reviews = Table(  # one reviewer's review (or skip) of one item
    "reviews",
    metadata,
    Column("item_id", String(32), primary_key=True),
    Column("reviewer", String(200), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("skipped", Boolean, nullable=False),
    Column("corrected_output", Text),
    Column("comment", Text),
    Column("created_ns", BigInteger, nullable=False),
)

review_scores = Table(
    "review_scores",
    metadata,
    Column("item_id", String(32), primary_key=True),
    Column("reviewer", String(200), primary_key=True),
    Column("config_name", String(100), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("value", Float),
    Column("string_value", Text),
    Column("created_ns", BigInteger, nullable=False),
    Index("ix_review_scores_config", "project_id", "config_name"),
)

# -- monitors and alerts (migration 0015) ---------------------------------------------------------------

# Monitors read scores by name in time order, from a cursor (migration 0015)
Index("ix_scores_created", scores.c.project_id, scores.c.name, scores.c.created_ns)

monitors = Table(
    "monitors",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("metric", String(32), nullable=False),
    Column("score_name", Text),
    Column("threshold", Float),
    Column("model", Text),
    Column("route", Text),
    Column("prompt_name", Text),
    Column("prompt_version", Text),
    Column("shift", Float, nullable=False),
    Column("arl0", Float, nullable=False),
    Column("baseline_s", BigInteger, nullable=False),
    Column("webhook_url", Text),
    Column("created_ns", BigInteger, nullable=False),
    Column("silenced_until_ns", BigInteger),
    Column("state", Text, nullable=False),  # JSON (pilothouse.domain.monitors.MonitorState)
    Index("ix_monitors_project", "project_id", "created_ns"),
)

monitor_alerts = Table(
    "monitor_alerts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("monitor_id", String(32), nullable=False),
    Column("project_id", String(64), nullable=False),
    Column("fired_ns", BigInteger, nullable=False),
    Column("metric", String(32), nullable=False),
    Column("observed", Float, nullable=False),
    Column("baseline", Float, nullable=False),
    Column("samples", Integer, nullable=False),
    Column("statistic", Float, nullable=False),
    Column("message", Text, nullable=False),
    Column("silenced", Boolean, nullable=False),
    Column("status", String(16), nullable=False),  # open | acknowledged
    Column("acknowledged_ns", BigInteger),
    Column("acknowledged_by", Text),
    Column("delivery", Text),
    Index("ix_monitor_alerts_project", "project_id", "fired_ns"),
    Index("ix_monitor_alerts_monitor", "monitor_id", "status"),
)

# Background work that one process at a time does (evaluating the monitors): a row per job, held by a
# process until it expires; another process takes it over only after that.
worker_leases = Table(
    "worker_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_ns", BigInteger, nullable=False),
)

# -- online evaluators (migration 0014): rules that score live traces in a background worker --------

online_evaluators = Table(  # the current version of each evaluator
    "online_evaluators",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),  # 1, 2, ...: a new one on every edit
    Column("definition", Text, nullable=False),  # JSON: filters, sampling, scorer, judge, cost cap
    Column("enabled", Boolean, nullable=False),
    Column("cursor_pk", BigInteger, nullable=False),  # the last trace key the live poll has looked at
    Column("created_ns", BigInteger, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
    UniqueConstraint("project_id", "name", name="uq_online_evaluators_name"),
)

online_evaluator_versions = Table(  # every version ever saved: a score names the version it came from
    "online_evaluator_versions",
    metadata,
    Column("evaluator_id", String(32), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("definition", Text, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
)

online_items = Table(  # the persisted work: one (evaluator version, trace) each, claimed under a lease
    "online_items",
    metadata,
    Column("pk", TRACE_PK, primary_key=True, autoincrement=True),
    Column("project_id", String(64), nullable=False),
    Column("evaluator_id", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("state", String(12), nullable=False),  # pending | running | scored | unmeasured
    Column("due_ns", BigInteger, nullable=False),  # not claimed before (retries back off)
    Column("lease_owner", String(64)),
    Column("lease_until_ns", BigInteger),
    Column("attempts", Integer, nullable=False),
    Column("reason", Text),  # why it is unmeasured, or the last attempt's error
    Column("score_id", String(32)),
    Column("value", Float),
    Column("cost_usd", Float),  # what its judge calls cost
    Column("created_ns", BigInteger, nullable=False),
    Column("finished_ns", BigInteger),
    UniqueConstraint("evaluator_id", "version", "trace_id", name="uq_online_items_trace"),
    Index("ix_online_items_due", "state", "due_ns"),
    Index("ix_online_items_finished", "evaluator_id", "finished_ns"),
    Index("ix_online_items_trace", "project_id", "trace_id"),
)

# -- saved views of the trace list (migration 0022) --------------------------------------------------------

saved_views = Table(
    "saved_views",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("name", Text, nullable=False),
    Column("query", Text, nullable=False),  # the list's URL query string
    Column("created_ns", BigInteger, nullable=False),
    UniqueConstraint("project_id", "name", name="uq_saved_views_name"),
)

# Full-text search (migration 0022) lives outside these tables: SQLite's FTS5 table ``span_search`` (and
# the shadow tables FTS5 keeps, and span_search_top), PostgreSQL's ``spans.search`` and ``traces.search``
# columns with their triggers and GIN indexes.
# store/search.py reads them with SQL of its own; the migration test leaves them out of its comparison.
SEARCH_OBJECTS = frozenset(
    {
        "span_search",
        "span_search_data",
        "span_search_idx",
        "span_search_config",
        "span_search_top",
        "search",
        "ix_spans_search",
        "ix_traces_search",
    }
)
