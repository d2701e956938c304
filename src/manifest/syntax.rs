//! The syntax of values that reach Docker, proxy configs, SQL or the file system:
//! names, host names, URL paths, image references, header names and values.
//!
//! Each check returns a message saying what is wrong and what is expected. Renderers
//! call the same functions again before writing, so a value that slipped past
//! validation still cannot break out of its directive.

/// A DNS label: `[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?`. Resource, volume and secret names.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid name: use 1 to 63 lowercase letters, digits and `-`, \
             starting and ending with a letter or digit",
            shown(name)
        ))
    }
}

/// A character that would let a value escape a config directive or a command line.
fn hostile_char(text: &str) -> Option<char> {
    text.chars().find(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, ';' | '{' | '}' | '"' | '\'' | '`' | '\\' | '$' | '#')
    })
}

/// Describes a character for a message: `;`, `newline`, `U+0007`.
fn describe_char(c: char) -> String {
    match c {
        '\n' => "a newline".to_owned(),
        '\r' => "a carriage return".to_owned(),
        '\t' => "a tab".to_owned(),
        ' ' => "a space".to_owned(),
        c if c.is_control() || c.is_whitespace() => format!("U+{:04X}", c as u32),
        c => format!("`{c}`"),
    }
}

/// Text as printed: control characters (newlines, escape sequences), line separators
/// and bidirectional overrides escaped, so that a name cannot forge output lines or
/// drive the terminal. Nothing else changes, and nothing is cut.
pub fn escape_control(text: &str) -> std::borrow::Cow<'_, str> {
    let hostile = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.contains(hostile) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hostile(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A value shown in a message, with control characters escaped and length bounded.
pub fn shown(text: &str) -> String {
    let escaped = escape_control(text);
    if escaped.chars().count() > 80 {
        let cut: String = escaped.chars().take(77).collect();
        format!("{cut}...")
    } else {
        escaped.into_owned()
    }
}

/// Checks a host name and returns it in its ASCII (punycode) form, lowercased.
///
/// A leading `*.` (wildcard) is allowed.
pub fn normalize_host(host: &str) -> Result<String, String> {
    if let Some(c) = hostile_char(host) {
        return Err(format!(
            "host `{}` contains {}; a host name is letters, digits, `-` and `.`",
            shown(host),
            describe_char(c)
        ));
    }
    let (wildcard, rest) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let ascii = idna::domain_to_ascii_strict(rest).map_err(|_| {
        format!(
            "host `{}` is not a valid host name: labels of letters, digits and `-` \
             separated by `.`",
            shown(host)
        )
    })?;
    let valid_labels = ascii.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    if !valid_labels || ascii.len() > 253 || ascii.is_empty() {
        return Err(format!(
            "host `{}` is not a valid host name: labels of 1 to 63 letters, digits and \
             `-` separated by `.`, 253 characters in all",
            shown(host)
        ));
    }
    Ok(if wildcard {
        format!("*.{ascii}")
    } else {
        ascii
    })
}

/// A host for a server connection: a host name or an IP address.
pub fn check_server_host(host: &str) -> Result<(), String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    normalize_host(host).map(|_| ())
}

/// A URL path prefix: starts with `/`, no `..` segment, only unreserved characters.
pub fn check_url_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path `{}` must start with `/`", shown(path)));
    }
    if let Some(c) = path.chars().find(|c| {
        !(c.is_ascii_alphanumeric()
            || matches!(c, '/' | '-' | '.' | '_' | '~' | '%' | '+' | '@' | ':' | ','))
    }) {
        return Err(format!(
            "path `{}` contains {}; a path is letters, digits and `/-._~%+@:,`",
            shown(path),
            describe_char(c)
        ));
    }
    if path.split('/').any(|seg| seg == ".." || seg == ".") || path.contains("//") {
        return Err(format!(
            "path `{}` has an empty, `.` or `..` segment; write the path plainly",
            shown(path)
        ));
    }
    Ok(())
}

/// An absolute file-system path: no `..`, no `:` (Docker's separator), no control
/// characters or characters that would break out of a config line.
pub fn check_fs_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "path `{}` must be absolute (start with `/`)",
            shown(path)
        ));
    }
    if let Some(c) = hostile_char(path).or_else(|| path.chars().find(|c| *c == ':')) {
        return Err(format!(
            "path `{}` contains {}",
            shown(path),
            describe_char(c)
        ));
    }
    if path.split('/').any(|seg| seg == "..") {
        return Err(format!("path `{}` contains a `..` segment", shown(path)));
    }
    Ok(())
}

/// A path inside a repository, cleaned: `./apps//web/` → `apps/web`, `.` → `` (the
/// root). Validation has refused `..` and absolute paths before.
pub fn normalize_relative(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// A Docker image reference: `[registry[:port]/]repo[/more][:tag][@digest]`.
pub fn check_image(image: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "image `{}` is not a valid image reference: {why}",
            shown(image)
        ))
    };
    if image.is_empty() || image.len() > 512 {
        return bad("it must have 1 to 512 characters");
    }
    if let Some(c) = image.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return bad(&format!("it contains {}", describe_char(c)));
    }
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let ok = digest.split_once(':').is_some_and(|(algo, hex)| {
            !algo.is_empty()
                && algo
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && hex.len() >= 32
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        });
        if !ok {
            return bad("the digest must look like `sha256:<hex>`");
        }
    }
    // A tag is after the last `:` that follows the last `/`.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return bad("the tag must be 1 to 128 letters, digits, `_`, `.` or `-`");
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // The first part is a registry when it has a `.` or `:` or is `localhost`.
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let registry = parts.remove(0);
        let (host, port) = match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        };
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
        if !ok {
            return bad("the registry must be a host name with an optional port");
        }
        if port == Some("") {
            return bad("the registry has a `:` but no port after it");
        }
        if let Some(port) = port {
            let ok = port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok_and(|p| p > 0);
            if !ok {
                return bad(&format!(
                    "the registry port `{}` is not a port number (1 to 65535)",
                    shown(port)
                ));
            }
        }
    }
    for part in parts {
        let ok = !part.is_empty()
            && part.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            && part.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            return bad(
                "repository names are lowercase letters, digits and `._-`, separated by `/`",
            );
        }
    }
    Ok(())
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 255;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid environment variable name: use letters, digits and `_`, \
             not starting with a digit",
            shown(name)
        ))
    }
}

/// An HTTP header name (an RFC 9110 token of letters, digits and `-`).
pub fn check_header_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid header name: use letters, digits and `-`",
            shown(name)
        ))
    }
}

/// An HTTP header value: printable, no quote, backslash or `$` (nginx would expand it).
pub fn check_header_value(value: &str) -> Result<(), String> {
    match value
        .chars()
        .find(|c| c.is_control() || matches!(c, '"' | '\\' | '$'))
    {
        Some(c) => Err(format!(
            "header value `{}` contains {}; header values cannot contain control \
             characters, `\"`, `\\` or `$`",
            shown(value),
            describe_char(c)
        )),
        None if value.len() > 4096 => Err("header value is longer than 4096 bytes".to_owned()),
        None => Ok(()),
    }
}

/// A word that is rendered bare into a proxy config (an entry point, a resolver name).
pub fn check_token(what: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} `{}` must be letters, digits, `-`, `_` or `.`",
            shown(value)
        ))
    }
}

/// A SQL identifier berth creates (database or user name): `[a-z_][a-z0-9_]*`.
pub fn check_sql_identifier(what: &str, value: &str, max: usize) -> Result<(), String> {
    let ok = value.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && value.len() <= max;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} `{}` must be 1 to {max} lowercase letters, digits and `_`, not \
             starting with a digit",
            shown(value)
        ))
    }
}

/// A Docker label key: `[a-zA-Z0-9._/-]`, at most 128 characters.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "label key `{}` must be 1 to 128 letters, digits, `.`, `_`, `/` or `-`",
            shown(key)
        ))
    }
}

/// Text that must not hold control characters (label values, env values, commands).
pub fn check_text(what: &str, value: &str) -> Result<(), String> {
    match value.chars().find(|c| *c == '\0') {
        Some(_) => Err(format!("{what} contains a NUL character")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "blog", "blog-db", "a1", &"a".repeat(63)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Blog",
            "a_b",
            "../etc",
            "a.b",
            &"a".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_are_punycoded_and_hostile_ones_refused() {
        assert_eq!(
            normalize_host("Blog.Example.com").unwrap(),
            "blog.example.com"
        );
        assert_eq!(
            normalize_host("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(normalize_host("*.example.com").unwrap(), "*.example.com");
        for (bad, why) in [
            ("a.com;", "`;`"),
            ("a.com}", "`}`"),
            ("a.com\nb", "a newline"),
            ("a b.com", "a space"),
            ("a.com\"", "`\"`"),
        ] {
            let err = normalize_host(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        for bad in [
            "",
            "-a.com",
            "a..com",
            "a_b.com",
            "a.com/x",
            &format!("{}.com", "a".repeat(64)),
        ] {
            assert!(normalize_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        for good in ["/", "/api", "/api/v1/", "/a-b_c.d~e"] {
            assert!(check_url_path(good).is_ok(), "{good}");
        }
        for bad in [
            "api", "/a b", "/a;b", "/a{", "/../x", "/a//b", "/a\"", "/a$b",
        ] {
            assert!(check_url_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn images() {
        for good in [
            "ghost",
            "ghost:5.2",
            "library/ghost:5.2-alpine",
            "registry.example.com:5000/team/api:v1",
            "localhost/app",
            "ghost@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(check_image(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Ghost",
            "ghost:",
            "ghost:a b",
            "gho st",
            "ghost@md5:1",
            "-x",
            "a//b",
        ] {
            assert!(check_image(bad).is_err(), "{bad}");
        }
    }
}
