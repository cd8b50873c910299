"""Prometheus metrics. One registry per process; `/metrics` serves `render()`."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "ACK_SECONDS",
    "ANSWER_SECONDS",
    "CONTENT_TYPE",
    "COST_USD",
    "DAILY_BUDGET_USD",
    "ERRORS",
    "EVENTS",
    "FEEDBACK",
    "FIRST_TOKEN_SECONDS",
    "INFLIGHT",
    "MCP_CALLS",
    "MCP_CALL_SECONDS",
    "MCP_ERRORS",
    "MCP_SERVER_UP",
    "MODEL_CALLS",
    "QUEUE_DEPTH",
    "REGISTRY",
    "REPLIES",
    "TOKENS",
    "TOOL_CALLS",
    "render",
]

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SLOW = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)

EVENTS = Counter(
    "teambot_events_received",
    "Platform events received, by platform and kind",
    ["platform", "kind"],
    registry=REGISTRY,
)
ACK_SECONDS = Histogram(
    "teambot_ack_seconds",
    "Time from receiving a platform event to acknowledging it",
    ["platform"],
    buckets=_FAST,
    registry=REGISTRY,
)
REPLIES = Counter(
    "teambot_replies",
    "Replies finished, by platform and outcome (answered, failed, duplicate)",
    ["platform", "outcome"],
    registry=REGISTRY,
)
FIRST_TOKEN_SECONDS = Histogram(
    "teambot_first_token_seconds",
    "Time from starting an answer to its first streamed text",
    ["platform"],
    buckets=_SLOW,
    registry=REGISTRY,
)
ANSWER_SECONDS = Histogram(
    "teambot_answer_seconds",
    "Time from starting an answer to its final text",
    ["platform"],
    buckets=_SLOW,
    registry=REGISTRY,
)
MODEL_CALLS = Counter(
    "teambot_model_calls",
    "Model calls by route, target and outcome (ok or the error category)",
    ["route", "target", "outcome"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "teambot_tokens",
    "Tokens used, by route, model and direction (input, output, cached_input: input "
    "served from the prompt cache)",
    ["route", "model", "direction"],
    registry=REGISTRY,
)
COST_USD = Counter(
    "teambot_cost_usd",
    "Estimated spend in USD, by route and model",
    ["route", "model"],
    registry=REGISTRY,
)
FEEDBACK = Counter(
    "teambot_feedback",
    "Votes on answers (a changed vote counts again, for its new rating)",
    ["platform", "route", "model", "rating"],
    registry=REGISTRY,
)
TOOL_CALLS = Counter(
    "teambot_tool_calls",
    "Tool calls by tool and outcome (ok, error)",
    ["tool", "outcome"],
    registry=REGISTRY,
)
MCP_CALLS = Counter(
    "teambot_mcp_calls",
    "Calls to MCP server tools, by server and tool (the server's own tool name)",
    ["server", "tool"],
    registry=REGISTRY,
)
MCP_ERRORS = Counter(
    "teambot_mcp_errors",
    "Failed MCP tool calls by server, tool and kind (tool, unavailable, timeout, connection, "
    "protocol, cancelled)",
    ["server", "tool", "kind"],
    registry=REGISTRY,
)
MCP_CALL_SECONDS = Histogram(
    "teambot_mcp_call_seconds",
    "Time an MCP tool call took, by server and tool",
    ["server", "tool"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
    registry=REGISTRY,
)
MCP_SERVER_UP = Gauge(
    "teambot_mcp_server_up",
    "1 while the MCP server is connected and its tools are offered, else 0",
    ["server"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "teambot_queue_depth",
    "Messages waiting for their conversation's turn in this process",
    registry=REGISTRY,
)
INFLIGHT = Gauge(
    "teambot_inflight_replies",
    "Replies being produced in this process",
    registry=REGISTRY,
)
DAILY_BUDGET_USD = Gauge(
    "teambot_daily_budget_usd",
    "DAILY_BUDGET_USD, the daily spending limit per workspace (0 = none); for alerts",
    registry=REGISTRY,
)
ERRORS = Counter(
    "teambot_errors",
    "Errors by class (model categories, memory, budget, internal, platform)",
    ["error_class"],
    registry=REGISTRY,
)


def render() -> bytes:
    return generate_latest(REGISTRY)
