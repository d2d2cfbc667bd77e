//! The ProtoBuf:1 messages, generated at build time by prost from
//! `pluginsocket.proto` (build.rs): package `kong_plugin_protocol`, and
//! Google's `Struct`/`Value`/`ListValue` from `prost_types`.

// Generated code: some messages (PdkArg, PdkCall...) are in Kong's schema
// but on no wire today.
#![allow(clippy::all, clippy::pedantic, missing_docs, dead_code)]

include!(concat!(env!("OUT_DIR"), "/kong_plugin_protocol.rs"));
