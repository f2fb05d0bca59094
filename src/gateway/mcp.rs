//! Reading an MCP request as the gateway needs it: the JSON-RPC messages of a POST body (one or a
//! batch), what each one asks for in policy terms, and whether the `Mcp-Method`/`Mcp-Name`
//! headers of the stateless transport agree with the body.

use axum::http::HeaderMap;
use serde_json::Value;

use crate::gateway::policy::Target;

/// One JSON-RPC message of a request.
#[derive(Debug)]
pub struct Message {
    /// The request id (absent on notifications and responses).
    pub id: Option<Value>,
    pub method: Option<String>,
    /// The tool, prompt or resource named, for `tools/call`, `prompts/get`, `resources/read`.
    pub name: Option<String>,
    /// `params.arguments` of a `tools/call`.
    pub arguments: Option<Value>,
}

impl Message {
    /// What the message asks for, in policy terms.
    pub fn target(&self) -> Target<'_> {
        match (self.method.as_deref(), self.name.as_deref()) {
            (Some("tools/call"), Some(name)) => Target::Tool(name),
            (Some("prompts/get"), Some(name)) => Target::Prompt(name),
            (Some("resources/read"), Some(uri)) => Target::Resource(uri),
            _ => Target::Other,
        }
    }

    pub fn is_tool_call(&self) -> bool {
        self.method.as_deref() == Some("tools/call")
    }
}

/// A request body that is not acceptable, with what to say.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// The messages of a POST body. An object with a repeated key is refused: the gateway and the
/// MCP server might read different values from it (a tool name the policy never saw).
pub fn parse(body: &[u8]) -> Result<(Vec<Message>, bool), Malformed> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde::de::Deserializer::deserialize_any(&mut de, Strict).map_err(|e| {
        if e.to_string().contains(DUPLICATE) {
            Malformed("a JSON object repeats a key")
        } else {
            Malformed("the body is not JSON")
        }
    })?;
    de.end().map_err(|_| Malformed("the body is not JSON"))?;
    match value {
        Value::Array(items) if items.is_empty() => Err(Malformed("an empty batch")),
        Value::Array(items) => Ok((items.iter().map(message).collect::<Result<_, _>>()?, true)),
        single => Ok((vec![message(&single)?], false)),
    }
}

const DUPLICATE: &str = "duplicate key in a JSON object";

/// Builds a `Value` like serde_json does, refusing an object that repeats a key.
struct Strict;

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(Strict)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Strict)?;
            if object.insert(key, value).is_some() {
                return Err(serde::de::Error::custom(DUPLICATE));
            }
        }
        Ok(Value::Object(object))
    }
}

fn message(value: &Value) -> Result<Message, Malformed> {
    let Value::Object(object) = value else { return Err(Malformed("a JSON-RPC message must be an object")) };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Malformed("not a JSON-RPC 2.0 message"));
    }
    let method = match object.get("method") {
        None => None,
        Some(Value::String(m)) => Some(m.clone()),
        Some(_) => return Err(Malformed("method must be a string")),
    };
    let params = object.get("params");
    let named = |key: &str| params.and_then(|p| p.get(key));
    let name = match method.as_deref() {
        Some("tools/call" | "prompts/get") => Some(named("name")),
        Some("resources/read") => Some(named("uri")),
        _ => None,
    };
    let name = match name {
        None => None,
        Some(Some(Value::String(n))) if !n.is_empty() && n.len() <= 1024 => Some(n.clone()),
        Some(_) => return Err(Malformed("params must name the tool, prompt or resource as a string")),
    };
    let arguments = if method.as_deref() == Some("tools/call") { named("arguments").cloned() } else { None };
    Ok(Message { id: object.get("id").cloned(), method, name, arguments })
}

/// The stateless transport's `Mcp-Method` and `Mcp-Name` headers, when present, must say what
/// the (single) message says.
pub fn headers_agree(headers: &HeaderMap, messages: &[Message], batch: bool) -> Result<(), Malformed> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"));
    let (method, name) = (header("mcp-method"), header("mcp-name"));
    if method.is_none() && name.is_none() {
        return Ok(());
    }
    let [message] = messages else { return Err(Malformed("Mcp-Method and Mcp-Name cannot describe a batch")) };
    if batch {
        return Err(Malformed("Mcp-Method and Mcp-Name cannot describe a batch"));
    }
    if method.is_some_and(|m| Some(m) != message.method.as_deref()) {
        return Err(Malformed("the Mcp-Method header differs from the body's method"));
    }
    if name.is_some_and(|n| Some(n) != message.name.as_deref()) {
        return Err(Malformed("the Mcp-Name header differs from the body's name"));
    }
    Ok(())
}

/// The id of the one `tools/list` request in the messages, if there is one: its answer is
/// filtered.
pub fn tools_list_id(messages: &[Message]) -> Option<Value> {
    let mut lists = messages.iter().filter(|m| m.method.as_deref() == Some("tools/list"));
    let first = lists.next()?;
    if lists.next().is_some() {
        return None;
    }
    first.id.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_targets() {
        let (m, batch) = parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}"#,
        )
        .unwrap();
        assert!(!batch);
        assert_eq!(m[0].target(), Target::Tool("search"));
        assert_eq!(m[0].arguments, Some(serde_json::json!({"q": "x"})));
        let (m, batch) = parse(br#"[{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#).unwrap();
        assert!(batch);
        assert_eq!(m[0].target(), Target::Resource("file:///a"));
        assert_eq!(m[1].target(), Target::Other);
        for bad in [
            &b"nope"[..],
            b"[]",
            b"42",
            br#"{"id":1}"#,
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{}}"#,
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":7}}"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn headers_must_agree() {
        let (m, _) = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}"#).unwrap();
        let mut h = HeaderMap::new();
        assert!(headers_agree(&h, &m, false).is_ok());
        h.insert("mcp-method", "tools/call".parse().unwrap());
        h.insert("mcp-name", "search".parse().unwrap());
        assert!(headers_agree(&h, &m, false).is_ok());
        h.insert("mcp-name", "delete".parse().unwrap());
        assert!(headers_agree(&h, &m, false).is_err());
        h.remove("mcp-name");
        h.insert("mcp-method", "tools/list".parse().unwrap());
        assert!(headers_agree(&h, &m, false).is_err());
    }
}
