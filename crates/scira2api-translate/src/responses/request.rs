//! A Responses request (`POST /v1/responses`) as a chat completions request.
//!
//! Three kinds of field: those that map (input items, function tools, `tool_choice`,
//! `text.format`, `reasoning.effort`, `max_output_tokens`, sampling); those a client *requires*
//! and chat cannot do (a forced built-in tool, `background`, `conversation`, `prompt`
//! templates, file inputs), which are a 400 naming the `param` before any upstream call; and
//! those only offered or hinted (built-in tools under `tool_choice: auto`, `include`,
//! `prompt_cache_key`, `client_metadata`, …), which are accepted and, when they have no effect,
//! named in [`ChatPlan::dropped`] (the `x-dropped-params` header).

use scira2api_types::Error;
use serde_json::{Map, Value, json};

/// Tool types of OpenAI's built-in tools: offered ones are dropped, forced ones refused.
const BUILT_IN_TOOLS: &[&str] = &[
    "web_search",
    "web_search_preview",
    "web_search_2025_08_26",
    "web_search_preview_2025_03_11",
    "file_search",
    "code_interpreter",
    "computer_use",
    "computer_use_preview",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "apply_patch",
    "custom",
];

/// Fields that are hints: accepted with no effect on a chat upstream (named as dropped).
const HINTS: &[&str] = &[
    "client_metadata",
    "include",
    "max_tool_calls",
    "prompt_cache_retention",
    "reasoning.summary",
    "service_tier",
    "truncation",
    "top_logprobs",
    "text.verbosity",
];

/// What a Responses request becomes.
#[derive(Debug, Clone)]
pub struct ChatPlan {
    /// The chat completions request body (always a JSON object).
    pub body: Map<String, Value>,
    /// Request fields accepted but without effect upstream, for `x-dropped-params`.
    pub dropped: Vec<String>,
    /// The fields the response object echoes from the request (`tools`, `tool_choice`, `text`,
    /// `temperature`, …), in the schema's order.
    pub echo: Map<String, Value>,
    /// The conversation so far as Responses input items: the previous response's (when given)
    /// and this request's, for storing with the response.
    pub input: Vec<Value>,
    /// `stream`.
    pub stream: bool,
    /// `store` (default true, as OpenAI's).
    pub store: bool,
    /// `previous_response_id`, when given.
    pub previous_response_id: Option<String>,
}

fn bad(message: impl Into<String>, param: &str) -> Error {
    Error::invalid(message, Some(param))
}

fn unsupported(param: &str, what: &str) -> Error {
    Error::InvalidRequest {
        message: format!(
            "`{param}` is not supported by this gateway: {what}. Remove it to send the request."
        ),
        param: Some(param.to_owned()),
        code: Some("unsupported_parameter"),
    }
}

/// What the chosen upstream can do beyond chat completions, where that changes the translation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Capabilities {
    /// It searches the web when asked through chat's `web_search_options` (Scira): a
    /// `web_search` tool is then honoured — offered or forced — instead of dropped or refused.
    pub web_search: bool,
}

/// The `previous_response_id` of a Responses request body, if any (to look the history up
/// before translating).
pub fn previous_response_id(req: &Value) -> Option<&str> {
    req.get("previous_response_id").and_then(Value::as_str)
}

/// Translates a Responses request. `history` holds the input and output items of the previous
/// response (and its own history), oldest first, when `previous_response_id` named one.
pub fn to_chat(req: &Value, history: &[Value]) -> Result<ChatPlan, Error> {
    to_chat_for(req, history, Capabilities::default())
}

/// Like [`to_chat`], for an upstream with `caps`.
pub fn to_chat_for(req: &Value, history: &[Value], caps: Capabilities) -> Result<ChatPlan, Error> {
    let obj = req
        .as_object()
        .ok_or_else(|| Error::invalid("The request body must be a JSON object", None))?;
    let mut dropped = Vec::new();
    for (param, what) in [
        ("background", "background responses need a job store"),
        (
            "conversation",
            "conversations are not stored; use previous_response_id",
        ),
        ("prompt", "prompt templates are not available"),
    ] {
        match obj.get(param) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(_) => return Err(unsupported(param, what)),
        }
    }
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("`model` is required and must be a string", "model"))?;
    let stream = bool_field(obj, "stream", false)?;
    let store = bool_field(obj, "store", true)?;

    let mut messages = Vec::new();
    let instructions = match obj.get("instructions") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => {
            messages.push(json!({"role": "system", "content": s}));
            Value::String(s.clone())
        }
        Some(_) => return Err(bad("`instructions` must be a string", "instructions")),
    };
    let mut input = history.to_vec();
    let new_items = input_items(obj.get("input"))?;
    let first_new = input.len();
    input.extend(new_items);
    items_to_messages(&input, first_new, &mut messages, &mut dropped)?;
    if messages.is_empty() {
        return Err(bad("`input` must hold at least one item", "input"));
    }

    let mut body = Map::new();
    body.insert("model".into(), Value::String(model.to_owned()));
    body.insert("messages".into(), Value::Array(messages));

    let (tools, echo_tools, web) = tools(obj.get("tools"), caps, &mut dropped)?;
    let forced_web = caps.web_search && forces_web_search(obj.get("tool_choice"));
    let tool_choice = if forced_web {
        None
    } else {
        tool_choice(
            obj.get("tool_choice"),
            !tools.is_empty() || web.is_some(),
            obj.get("tools"),
        )?
    };
    if let Some(options) = web.or_else(|| forced_web.then(|| json!({}))) {
        body.insert("web_search_options".into(), options);
    }
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = &tool_choice {
            body.insert("tool_choice".into(), tc.clone());
        }
    }
    let parallel = match obj.get("parallel_tool_calls") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => {
            if body.contains_key("tools") {
                body.insert("parallel_tool_calls".into(), Value::Bool(*b));
            }
            *b
        }
        Some(_) => {
            return Err(bad(
                "`parallel_tool_calls` must be a boolean",
                "parallel_tool_calls",
            ));
        }
    };

    let text = obj
        .get("text")
        .cloned()
        .unwrap_or_else(|| json!({"format": {"type": "text"}}));
    if let Some(format) = text.get("format") {
        if let Some(rf) = response_format(format)? {
            body.insert("response_format".into(), rf);
        }
    }
    if text.get("verbosity").is_some_and(|v| !v.is_null()) {
        dropped.push("text.verbosity".to_owned());
    }
    let reasoning = obj.get("reasoning").cloned().unwrap_or(Value::Null);
    if let Some(effort) = reasoning.get("effort").filter(|e| !e.is_null()) {
        body.insert("reasoning_effort".into(), effort.clone());
    }
    if reasoning.get("summary").is_some_and(|v| !v.is_null()) {
        dropped.push("reasoning.summary".to_owned());
    }
    if let Some(n) = obj.get("max_output_tokens").filter(|v| !v.is_null()) {
        if n.as_u64().is_none_or(|n| n < 1) {
            return Err(bad(
                "`max_output_tokens` must be a whole number of at least 1",
                "max_output_tokens",
            ));
        }
        body.insert("max_completion_tokens".into(), n.clone());
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("user", "user"),
        ("safety_identifier", "safety_identifier"),
        ("prompt_cache_key", "prompt_cache_key"),
        ("seed", "seed"),
        ("stop", "stop"),
        ("frequency_penalty", "frequency_penalty"),
        ("presence_penalty", "presence_penalty"),
    ] {
        if let Some(v) = obj.get(from).filter(|v| !v.is_null()) {
            body.insert(to.into(), v.clone());
        }
    }
    body.insert("stream".into(), Value::Bool(stream));
    if stream {
        // The response object always carries usage: ask for it.
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    match obj.get("truncation").and_then(Value::as_str) {
        None | Some("disabled") => {}
        Some("auto") => dropped.push("truncation".to_owned()),
        Some(other) => {
            return Err(bad(
                format!("`truncation` must be `auto` or `disabled`, not `{other}`"),
                "truncation",
            ));
        }
    }
    for key in obj.keys() {
        let known = matches!(
            key.as_str(),
            "model"
                | "input"
                | "instructions"
                | "stream"
                | "stream_options"
                | "store"
                | "tools"
                | "tool_choice"
                | "parallel_tool_calls"
                | "text"
                | "reasoning"
                | "max_output_tokens"
                | "temperature"
                | "top_p"
                | "user"
                | "safety_identifier"
                | "prompt_cache_key"
                | "seed"
                | "stop"
                | "frequency_penalty"
                | "presence_penalty"
                | "metadata"
                | "previous_response_id"
                | "truncation"
                | "background"
                | "conversation"
                | "prompt"
        );
        if !known && !obj[key].is_null() {
            dropped.push(key.clone());
        }
    }
    for hint in HINTS {
        if obj.get(*hint).is_some_and(|v| !v.is_null()) && !dropped.iter().any(|d| d == hint) {
            dropped.push((*hint).to_owned());
        }
    }
    dropped.sort();
    dropped.dedup();

    let mut echo = Map::new();
    echo.insert("instructions".into(), instructions);
    echo.insert(
        "max_output_tokens".into(),
        obj.get("max_output_tokens").cloned().unwrap_or(Value::Null),
    );
    echo.insert("model".into(), Value::String(model.to_owned()));
    echo.insert("parallel_tool_calls".into(), Value::Bool(parallel));
    echo.insert(
        "previous_response_id".into(),
        obj.get("previous_response_id")
            .cloned()
            .unwrap_or(Value::Null),
    );
    echo.insert(
        "reasoning".into(),
        json!({
            "effort": reasoning.get("effort").cloned().unwrap_or(Value::Null),
            "summary": reasoning.get("summary").cloned().unwrap_or(Value::Null),
        }),
    );
    echo.insert("store".into(), Value::Bool(store));
    echo.insert(
        "temperature".into(),
        obj.get("temperature").cloned().unwrap_or(json!(1.0)),
    );
    echo.insert("text".into(), text);
    echo.insert(
        "tool_choice".into(),
        obj.get("tool_choice")
            .cloned()
            .unwrap_or_else(|| json!("auto")),
    );
    echo.insert("tools".into(), Value::Array(echo_tools));
    echo.insert(
        "top_p".into(),
        obj.get("top_p").cloned().unwrap_or(json!(1.0)),
    );
    echo.insert(
        "truncation".into(),
        obj.get("truncation")
            .cloned()
            .unwrap_or_else(|| json!("disabled")),
    );
    if let Some(u) = obj.get("user").filter(|u| u.is_string()) {
        echo.insert("user".into(), u.clone());
    }
    echo.insert(
        "metadata".into(),
        obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    );
    echo.insert("background".into(), Value::Bool(false));
    Ok(ChatPlan {
        body,
        dropped,
        echo,
        input,
        stream,
        store,
        previous_response_id: previous_response_id(req).map(str::to_owned),
    })
}

/// The echo fields of a request that names only `model` (the defaults), for a response
/// object written when nothing more is known (a stream that failed before its first event).
pub fn default_echo(model: &str) -> Map<String, Value> {
    to_chat(&json!({"model": model, "input": ""}), &[])
        .map(|p| p.echo)
        .unwrap_or_default()
}

fn bool_field(obj: &Map<String, Value>, key: &str, default: bool) -> Result<bool, Error> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(format!("`{key}` must be a boolean"), key)),
    }
}

/// `input` as a list of items (a string is one user message).
fn input_items(input: Option<&Value>) -> Result<Vec<Value>, Error> {
    match input {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![
            json!({"type": "message", "role": "user", "content": s}),
        ]),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(_) => Err(bad("`input` must be a string or a list of items", "input")),
    }
}

/// Appends the chat messages of `items`. Consecutive `function_call` items (and the assistant
/// text right before them) become one assistant message with `tool_calls`. `first_new` is the
/// index of the first item of this request (parameter names count from it).
fn items_to_messages(
    items: &[Value],
    first_new: usize,
    out: &mut Vec<Value>,
    dropped: &mut Vec<String>,
) -> Result<(), Error> {
    for (n, item) in items.iter().enumerate() {
        let at = if n >= first_new {
            format!("input[{}]", n - first_new)
        } else {
            "previous_response_id".to_owned()
        };
        let kind =
            item.get("type")
                .and_then(Value::as_str)
                .unwrap_or(if item.get("role").is_some() {
                    "message"
                } else {
                    ""
                });
        match kind {
            "message" => out.push(message(item, &at)?),
            "function_call" => {
                let call_id = str_field(item, "call_id", &at)?;
                let name = str_field(item, "name", &at)?;
                let arguments = item
                    .get("arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("{}");
                let call = json!({
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                });
                match out.last_mut() {
                    Some(last) if last["role"] == "assistant" => {
                        let calls = last
                            .as_object_mut()
                            .map(|m| m.entry("tool_calls").or_insert_with(|| json!([])));
                        if let Some(Value::Array(calls)) = calls {
                            calls.push(call);
                        }
                    }
                    _ => out
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let call_id = str_field(item, "call_id", &at)?;
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => text_of_parts(parts),
                    _ => {
                        return Err(bad(
                            "`output` must be a string or a list of parts",
                            &format!("{at}.output"),
                        ));
                    }
                };
                out.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
            // Reasoning of an earlier turn: chat completions has no field to carry it back.
            "reasoning" => {
                if n >= first_new {
                    dropped.push(format!("{at}:reasoning"));
                }
            }
            "item_reference" => {
                return Err(unsupported(
                    &at,
                    "item references need the referenced item stored; send the item itself",
                ));
            }
            other => {
                return Err(bad(
                    format!(
                        "input item type `{other}` cannot be sent to a chat completions upstream (message, function_call, function_call_output and reasoning items can)"
                    ),
                    &format!("{at}.type"),
                ));
            }
        }
    }
    Ok(())
}

fn str_field<'a>(item: &'a Value, key: &str, at: &str) -> Result<&'a str, Error> {
    item.get(key).and_then(Value::as_str).ok_or_else(|| {
        bad(
            format!("`{key}` is required and must be a string"),
            &format!("{at}.{key}"),
        )
    })
}

fn text_of_parts(parts: &[Value]) -> String {
    parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("")
}

/// A `message` item as a chat message.
fn message(item: &Value, at: &str) -> Result<Value, Error> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some("user") => "user",
        Some("assistant") => "assistant",
        // Chat completions backends beyond OpenAI's know `system`, not `developer`.
        Some("system") | Some("developer") => "system",
        _ => {
            return Err(bad(
                "`role` must be one of user, assistant, system, developer",
                &format!("{at}.role"),
            ));
        }
    };
    let content = match item.get("content") {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(parts)) if role == "user" => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let pat = format!("{at}.content[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text") | Some("output_text") | Some("text") => {
                        out.push(json!({"type": "text", "text": p.get("text").and_then(Value::as_str).unwrap_or("")}));
                    }
                    Some("input_image") => {
                        let Some(url) = p.get("image_url").and_then(Value::as_str) else {
                            return Err(unsupported(
                                &format!("{pat}.file_id"),
                                "images by file id need the Files API; send image_url (a URL or a data URL)",
                            ));
                        };
                        let mut image = json!({"url": url});
                        if let Some(d) = p.get("detail").and_then(Value::as_str) {
                            image["detail"] = Value::String(d.to_owned());
                        }
                        out.push(json!({"type": "image_url", "image_url": image}));
                    }
                    Some("input_file") => {
                        return Err(unsupported(
                            &pat,
                            "file inputs are not translated onto chat completions",
                        ));
                    }
                    Some("input_audio") => {
                        out.push(json!({"type": "input_audio", "input_audio": p.get("input_audio").cloned().unwrap_or(Value::Null)}));
                    }
                    other => {
                        return Err(bad(
                            format!("content part type `{}` is not known", other.unwrap_or("")),
                            &format!("{pat}.type"),
                        ));
                    }
                }
            }
            Value::Array(out)
        }
        Some(Value::Array(parts)) => {
            // Assistant and system text: the parts joined (a refusal is its text).
            let text: String = parts
                .iter()
                .filter_map(|p| {
                    p.get("text")
                        .or_else(|| p.get("refusal"))
                        .and_then(Value::as_str)
                })
                .collect();
            Value::String(text)
        }
        _ => {
            return Err(bad(
                "`content` must be a string or a list of parts",
                &format!("{at}.content"),
            ));
        }
    };
    Ok(json!({"role": role, "content": content}))
}

/// Whether `tool_choice` forces a web search tool.
fn forces_web_search(choice: Option<&Value>) -> bool {
    choice
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|k| k.starts_with("web_search"))
}

/// The chat tools: function tools in chat's nested shape, plus a `web_search` tool as chat's
/// `web_search_options` when the upstream can search; other built-in and unknown tool types are
/// dropped (only offered: `tool_choice` is checked separately). Returns (chat tools, tools to
/// echo, web search options).
type Tools = (Vec<Value>, Vec<Value>, Option<Value>);

fn tools(
    tools: Option<&Value>,
    caps: Capabilities,
    dropped: &mut Vec<String>,
) -> Result<Tools, Error> {
    let list = match tools {
        None | Some(Value::Null) => return Ok((Vec::new(), Vec::new(), None)),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(bad("`tools` must be a list", "tools")),
    };
    let (mut chat, mut echo, mut web) = (Vec::new(), Vec::new(), None);
    for (i, t) in list.iter().enumerate() {
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
        if caps.web_search && kind.starts_with("web_search") {
            // The same options as chat's `web_search_options`.
            let mut options = Map::new();
            for k in ["search_context_size", "user_location"] {
                if let Some(v) = t.get(k).filter(|v| !v.is_null()) {
                    options.insert(k.into(), v.clone());
                }
            }
            web = Some(Value::Object(options));
            echo.push(t.clone());
            continue;
        }
        if kind != "function" {
            dropped.push(format!("tools[{i}]:{kind}"));
            continue;
        }
        let name = t.get("name").and_then(Value::as_str).ok_or_else(|| {
            bad(
                "a function tool needs a `name`",
                &format!("tools[{i}].name"),
            )
        })?;
        let mut f = Map::new();
        f.insert("name".into(), Value::String(name.to_owned()));
        if let Some(d) = t.get("description").filter(|d| !d.is_null()) {
            f.insert("description".into(), d.clone());
        }
        let parameters = t
            .get("parameters")
            .filter(|p| !p.is_null())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        f.insert("parameters".into(), parameters.clone());
        let strict = t.get("strict").and_then(Value::as_bool);
        if let Some(s) = strict {
            f.insert("strict".into(), Value::Bool(s));
        }
        chat.push(json!({"type": "function", "function": f}));
        echo.push(json!({
            "type": "function",
            "name": name,
            "description": t.get("description").cloned().unwrap_or(Value::Null),
            "parameters": parameters,
            "strict": strict.map_or(Value::Null, Value::Bool),
        }));
    }
    Ok((chat, echo, web))
}

/// `tool_choice` in chat's shape. A forced built-in tool, or `required` with no function tool
/// left, cannot be honoured: 400.
fn tool_choice(
    choice: Option<&Value>,
    has_functions: bool,
    tools: Option<&Value>,
) -> Result<Option<Value>, Error> {
    let Some(choice) = choice.filter(|c| !c.is_null()) else {
        return Ok(None);
    };
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" | "none" => Ok(Some(choice.clone())),
            "required" if has_functions => Ok(Some(choice.clone())),
            "required" => {
                let offered = tools
                    .and_then(Value::as_array)
                    .is_some_and(|t| !t.is_empty());
                Err(Error::InvalidRequest {
                    message: if offered {
                        "`tool_choice: required` needs a function tool: the built-in tools offered cannot run behind a chat completions upstream".to_owned()
                    } else {
                        "`tool_choice: required` needs at least one tool".to_owned()
                    },
                    param: Some("tool_choice".to_owned()),
                    code: Some("unsupported_parameter"),
                })
            }
            other => Err(bad(
                format!("`tool_choice` `{other}` is not one of auto, none, required"),
                "tool_choice",
            )),
        },
        Value::Object(o) => {
            let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
            match kind {
                "function" => {
                    let name = o.get("name").and_then(Value::as_str).ok_or_else(|| {
                        bad("a forced function needs a `name`", "tool_choice.name")
                    })?;
                    Ok(Some(
                        json!({"type": "function", "function": {"name": name}}),
                    ))
                }
                k if BUILT_IN_TOOLS.contains(&k) || k.starts_with("web_search") => {
                    Err(Error::InvalidRequest {
                        message: format!(
                            "`tool_choice` forces the built-in tool `{k}`, which a chat completions upstream cannot run; the answer would silently ignore it"
                        ),
                        param: Some("tool_choice".to_owned()),
                        code: Some("unsupported_parameter"),
                    })
                }
                "allowed_tools" => Err(unsupported(
                    "tool_choice",
                    "`allowed_tools` is not translated; send only the allowed tools",
                )),
                other => Err(bad(
                    format!("`tool_choice` type `{other}` is not known"),
                    "tool_choice.type",
                )),
            }
        }
        _ => Err(bad(
            "`tool_choice` must be a string or an object",
            "tool_choice",
        )),
    }
}

/// `text.format` as chat's `response_format` (`None` for plain text).
fn response_format(format: &Value) -> Result<Option<Value>, Error> {
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let name = format
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("response");
            let schema = format
                .get("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    bad(
                        "`text.format.schema` must be a JSON schema object",
                        "text.format.schema",
                    )
                })?;
            let mut js = Map::new();
            js.insert("name".into(), Value::String(name.to_owned()));
            if let Some(d) = format.get("description").filter(|d| !d.is_null()) {
                js.insert("description".into(), d.clone());
            }
            js.insert("schema".into(), schema.clone());
            if let Some(s) = format.get("strict").and_then(Value::as_bool) {
                js.insert("strict".into(), Value::Bool(s));
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": js})))
        }
        Some(other) => Err(bad(
            format!("`text.format.type` `{other}` is not one of text, json_object, json_schema"),
            "text.format.type",
        )),
    }
}
