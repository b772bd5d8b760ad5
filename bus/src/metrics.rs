//! Every metric name qzx exports, in one place: `qzx_<component>_<name>_<unit>`,
//! counters ending in `_total`. Labels are bounded (sources, topics, stages,
//! priorities, channel kinds, route templates) and never carry ids.

// ingest
pub const INGEST_EVENTS_RECEIVED_TOTAL: &str = "qzx_ingest_events_received_total";
pub const INGEST_EVENTS_ACCEPTED_TOTAL: &str = "qzx_ingest_events_accepted_total";
pub const INGEST_EVENTS_REJECTED_TOTAL: &str = "qzx_ingest_events_rejected_total";
pub const INGEST_EVENTS_DUPLICATE_TOTAL: &str = "qzx_ingest_events_duplicate_total";
pub const INGEST_DEADLETTER_TOTAL: &str = "qzx_ingest_deadletter_total";
/// Calls accepted with a correction, by flag (`unlocated`, `truncated`...).
pub const INGEST_EVENTS_FLAGGED_TOTAL: &str = "qzx_ingest_events_flagged_total";
/// Events whose client-sent `cap_*` attributes were moved under
/// `attrs.client`: only the CAP parser may set them.
pub const INGEST_CAP_ATTRS_DEMOTED_TOTAL: &str = "qzx_ingest_cap_attrs_demoted_total";
pub const INGEST_POSITIONS_TOTAL: &str = "qzx_ingest_positions_total";
pub const INGEST_REQUEST_SECONDS: &str = "qzx_ingest_request_duration_seconds";

// kafka (every component)
pub const KAFKA_PRODUCE_SECONDS: &str = "qzx_kafka_produce_duration_seconds";
pub const KAFKA_PRODUCE_ERRORS_TOTAL: &str = "qzx_kafka_produce_errors_total";
pub const KAFKA_FORCED_REJOINS_TOTAL: &str = "qzx_kafka_forced_rejoins_total";
/// Records a consumer took from Kafka, by topic: with the produce
/// histogram's count, how many times the bus moves each event.
pub const KAFKA_RECORDS_CONSUMED_TOTAL: &str = "qzx_kafka_records_consumed_total";

// router
pub const ROUTER_PROCESS_SECONDS: &str = "qzx_router_process_duration_seconds";
/// Records handled together before one settle (acks awaited, Store written).
pub const ROUTER_BATCH_RECORDS: &str = "qzx_router_batch_records";
pub const ROUTER_SETTLE_SECONDS: &str = "qzx_router_settle_duration_seconds";
pub const ROUTER_EVENTS_TOTAL: &str = "qzx_router_events_total";
/// Rungs of the escalation ladder climbed, by stage.
pub const ROUTER_LADDER_RUNGS_TOTAL: &str = "qzx_router_ladder_rungs_total";
pub const ROUTER_ACTIONS_TOTAL: &str = "qzx_router_actions_total";
pub const ROUTER_INCIDENTS_TOTAL: &str = "qzx_router_incidents_total";
pub const ROUTER_INCIDENTS_OPEN: &str = "qzx_router_incidents_open";
pub const ROUTER_TASKS_TOTAL: &str = "qzx_router_tasks_total";
pub const ROUTER_SLA_MET_TOTAL: &str = "qzx_router_sla_met_total";
pub const ROUTER_SLA_BREACHED_TOTAL: &str = "qzx_router_sla_breached_total";
pub const ROUTER_REPEATS_TOTAL: &str = "qzx_router_repeats_total";
pub const ROUTER_DIVERTED_TOTAL: &str = "qzx_router_diverted_total";
/// Records a new owner republished from a previous owner's outbox.
pub const ROUTER_REPUBLISHED_TOTAL: &str = "qzx_router_republished_total";
/// Batches thrown away and handled again, by reason (fenced, claim_lost,
/// store_lost).
pub const ROUTER_CONFLICTS_TOTAL: &str = "qzx_router_conflicts_total";
/// Units freed by the reconciler: held by a task that was not open.
pub const ROUTER_RECONCILED_TOTAL: &str = "qzx_router_reconciled_total";

// api
pub const API_WS_CONNECTIONS: &str = "qzx_api_ws_connections";
pub const API_WS_PUSHES_TOTAL: &str = "qzx_api_ws_pushes_total";
pub const API_WS_DROPPED_TOTAL: &str = "qzx_api_ws_dropped_total";
pub const API_WS_CLOSED_LAG_TOTAL: &str = "qzx_api_ws_closed_lag_total";
pub const API_COMMANDS_TOTAL: &str = "qzx_api_commands_total";
pub const API_HTTP_REQUESTS_TOTAL: &str = "qzx_api_http_requests_total";
pub const API_PUSH_LATENCY_SECONDS: &str = "qzx_api_push_latency_seconds";
