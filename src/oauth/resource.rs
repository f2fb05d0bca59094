//! Resource indicators (RFC 8707): the canonical form of an MCP server's URI, as registered and
//! as compared. Lower-case scheme and host, default port dropped, no fragment, no trailing slash.

/// Canonicalize a resource URI; the message says what is wrong.
pub fn canonicalize(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() || raw.len() > 2048 {
        return Err("must be 1 to 2048 characters");
    }
    if raw.contains('#') {
        return Err("must not contain a fragment (RFC 8707 §2)");
    }
    let url = url::Url::parse(raw).map_err(|_| "must be an absolute URI")?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("must be an https (or http) URI");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user information");
    }
    let mut text = url.to_string();
    if url.query().is_none() {
        while text.ends_with('/') {
            text.pop();
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        let c = |s| canonicalize(s).unwrap();
        assert_eq!(c("https://mcp.example.com/mcp"), "https://mcp.example.com/mcp");
        assert_eq!(c("https://mcp.example.com/mcp/"), "https://mcp.example.com/mcp");
        assert_eq!(c("HTTPS://MCP.Example.COM/mcp"), "https://mcp.example.com/mcp");
        assert_eq!(c("https://mcp.example.com:443/mcp"), "https://mcp.example.com/mcp");
        assert_eq!(c("https://mcp.example.com:8443/mcp"), "https://mcp.example.com:8443/mcp");
        assert_eq!(c("https://mcp.example.com"), "https://mcp.example.com");
        assert_eq!(c("https://mcp.example.com/"), "https://mcp.example.com");
        assert_eq!(c("http://127.0.0.1:3000/mcp"), "http://127.0.0.1:3000/mcp");
        // The path keeps its case.
        assert_eq!(c("https://mcp.example.com/MCP"), "https://mcp.example.com/MCP");
    }

    #[test]
    fn refusals() {
        for bad in ["https://mcp.example.com/mcp#x", "mcp.example.com", "urn:x:y", "ftp://h/x", "https://u:p@h/x", ""] {
            assert!(canonicalize(bad).is_err(), "{bad}");
        }
    }
}
