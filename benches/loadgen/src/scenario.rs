//! The benchmark scenarios: which PDK calls one `access` event makes, in
//! order. The load generator checks every event against this table; the
//! floor server emits exactly these calls. The Python plugins in
//! `benches/plugins/` must make the same calls.

/// A literal PDK argument as the plugin sends it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    Str(&'static str),
    Int(i64),
    /// A string-to-string map (e.g. the headers of `kong.response.exit`).
    Map(&'static [(&'static str, &'static str)]),
}

/// One expected PDK call. `args` is what the floor server sends; the load
/// generator checks the method name and, when `check_first` is set, that
/// the first argument equals `args[0]`.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub method: &'static str,
    pub args: &'static [Arg],
    pub check_first: bool,
}

const fn c(method: &'static str, args: &'static [Arg]) -> Call {
    Call {
        method,
        args,
        check_first: !args.is_empty(),
    }
}

#[derive(Debug)]
pub struct Scenario {
    pub name: &'static str,
    /// Plugin name used for StartInstance (and by `start_dedicated_server`).
    pub plugin: &'static str,
    pub calls: &'static [Call],
    /// Whether the plugin burns ~1 ms of CPU before its first call.
    pub burns_cpu: bool,
}

impl Scenario {
    /// The event ends with a terminal call (no Step follows it).
    pub fn ends_with_exit(&self) -> bool {
        self.calls.last().is_some_and(|c| is_terminal(c.method))
    }
}

const HELLO: &[Call] = &[
    c("kong.request.get_header", &[Arg::Str("host")]),
    c(
        "kong.response.set_header",
        &[Arg::Str("x-hello"), Arg::Str("hello example.com")],
    ),
    c(
        "kong.response.set_header",
        &[Arg::Str("x-two"), Arg::Str("2")],
    ),
];

const HEAVY: &[Call] = &[
    c("kong.request.get_header", &[Arg::Str("host")]),
    c("kong.request.get_path", &[]),
    c("kong.request.get_method", &[]),
    c("kong.request.get_scheme", &[]),
    c("kong.request.get_headers", &[]),
    c("kong.request.get_query", &[]),
    c("kong.client.get_ip", &[]),
    c("kong.log.debug", &[Arg::Str("bench heavy start")]),
    c("kong.request.get_header", &[Arg::Str("user-agent")]),
    c("kong.ctx.shared.set", &[Arg::Str("bench"), Arg::Str("1")]),
    c("kong.ctx.shared.get", &[Arg::Str("bench")]),
    c(
        "kong.service.request.set_header",
        &[Arg::Str("x-upstream"), Arg::Str("1")],
    ),
    c(
        "kong.response.set_header",
        &[Arg::Str("x-h1"), Arg::Str("1")],
    ),
    c(
        "kong.response.set_header",
        &[Arg::Str("x-h2"), Arg::Str("2")],
    ),
    c(
        "kong.response.add_header",
        &[Arg::Str("x-h3"), Arg::Str("3")],
    ),
    c(
        "kong.response.set_header",
        &[Arg::Str("x-h4"), Arg::Str("4")],
    ),
    c("kong.request.get_host", &[]),
    c("kong.log.debug", &[Arg::Str("bench heavy end")]),
    c(
        "kong.response.set_header",
        &[Arg::Str("x-h5"), Arg::Str("5")],
    ),
    c(
        "kong.response.set_header",
        &[Arg::Str("x-h6"), Arg::Str("6")],
    ),
];

const EXIT: &[Call] = &[c(
    "kong.response.exit",
    &[
        Arg::Int(403),
        Arg::Str("denied"),
        Arg::Map(&[("x-why", "bench")]),
    ],
)];

const CPU: &[Call] = &[c(
    "kong.response.set_header",
    &[Arg::Str("x-cpu"), Arg::Str("done")],
)];

pub static SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "hello",
        plugin: "bench-hello",
        calls: HELLO,
        burns_cpu: false,
    },
    Scenario {
        name: "heavy",
        plugin: "bench-heavy",
        calls: HEAVY,
        burns_cpu: false,
    },
    Scenario {
        name: "exit",
        plugin: "bench-exit",
        calls: EXIT,
        burns_cpu: false,
    },
    Scenario {
        name: "cpu",
        plugin: "bench-cpu",
        calls: CPU,
        burns_cpu: true,
    },
];

pub fn by_name(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

pub fn by_plugin(plugin: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.plugin == plugin)
}

/// PDK functions that never return: Kong sends no Step after them (§5.2.3).
pub fn is_terminal(method: &str) -> bool {
    method == "kong.response.exit" || method == "kong.response.error"
}

/// The Step method Kong picks for a PDK function's result (§5.3, Kong 3.x:
/// StepError is never sent).
pub fn step_method(method: &str) -> &'static str {
    match method {
        "kong.client.get_credential" | "kong.client.authenticate" => "plugin.StepCredential",
        "kong.client.get_consumer" | "kong.client.load_consumer" => "plugin.StepConsumer",
        "kong.node.get_memory_stats" => "plugin.StepMemoryStats",
        "kong.router.get_route" => "plugin.StepRoute",
        "kong.router.get_service" => "plugin.StepService",
        "kong.request.get_query"
        | "kong.request.get_headers"
        | "kong.response.get_headers"
        | "kong.service.response.get_headers" => "plugin.StepMultiMap",
        _ => "plugin.Step",
    }
}

/// What the fake Kong returns for a PDK call.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// Lua nil: the Step carries no `Data` key.
    Nil,
    Str(&'static str),
    Int(i64),
    /// Multimap encoding of §6.1: every value is an array of strings.
    MultiMap(&'static [(&'static str, &'static [&'static str])]),
}

const REQUEST_HEADERS: &[(&str, &[&str])] = &[
    ("host", &["example.com"]),
    ("user-agent", &["kong-bench/1.0"]),
    ("accept", &["*/*"]),
    ("x-multi", &["a", "b"]),
];

const REQUEST_QUERY: &[(&str, &[&str])] = &[("page", &["1"]), ("debug", &[])];

/// The answer for `method` called with first string argument `first`.
pub fn answer(method: &str, first: Option<&str>) -> Answer {
    match method {
        "kong.request.get_header" => match first {
            Some("host") => Answer::Str("example.com"),
            Some("user-agent") => Answer::Str("kong-bench/1.0"),
            Some("accept") => Answer::Str("*/*"),
            _ => Answer::Nil,
        },
        "kong.request.get_host" => Answer::Str("example.com"),
        "kong.request.get_path" => Answer::Str("/bench"),
        "kong.request.get_method" => Answer::Str("GET"),
        "kong.request.get_scheme" => Answer::Str("http"),
        "kong.request.get_port" => Answer::Int(8000),
        "kong.request.get_raw_query" => Answer::Str("page=1&debug"),
        "kong.client.get_ip" | "kong.client.get_forwarded_ip" => Answer::Str("127.0.0.1"),
        "kong.request.get_headers" => Answer::MultiMap(REQUEST_HEADERS),
        "kong.request.get_query" => Answer::MultiMap(REQUEST_QUERY),
        "kong.ctx.shared.get" => Answer::Str("1"),
        _ => Answer::Nil,
    }
}
