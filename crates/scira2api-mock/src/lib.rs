//! A mock upstream on 127.0.0.1 for tests, the offline demo and benchmarks.
//!
//! It speaks the real protocols over real HTTP: OpenAI's `/v1/chat/completions` (JSON and SSE,
//! tool-call deltas, the usage chunk), `/v1/responses`, `/v1/models`, Anthropic's
//! `/v1/messages` (JSON and its event stream), Scira's official API (`/api/search` with a key,
//! `/api/xsearch`, `/api/reddit`, `/api/people`), and Scira's web `/api/search` (AI SDK 4 data
//! stream or AI SDK 5/6 SSE, scripted or replayed from a fixture). Faults can be queued (status
//! codes with any body, hangs, resets, cut streams), and every request is recorded so tests can
//! check exactly what the gateway sent.
//!
//! Per-request knobs for the OpenAI endpoint travel in the request body as
//! `"mock": {"chunks": 8, "delay_ms": 20, "latency_ms": 5, "content": "..."}` — a gateway that
//! forwards unknown fields passes them through.

#![deny(missing_docs)]

pub mod bad;
mod endpoints;
mod messages;
mod openai;
mod pace;
mod responses;
mod scira;
mod scira_api;
mod server;
mod uploads;

pub use openai::MOCK_MODELS;
pub use scira::SciraFormat;
pub use server::{Fault, MockOptions, MockServer, MockState, Recorded};
pub use uploads::digest;
