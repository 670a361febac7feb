//! `${NAME}` substitution, applied to every scalar before its type is resolved (so
//! `timeout_ms: ${T}` is an integer when `T=250`).

/// Replaces `${NAME}` with the variable's value and `$$` with `$`; any other `$` stays.
/// Returns every problem in the scalar rather than the first.
pub(crate) fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                errors.push("`${` without a closing `}` (write `$$` for a literal `$`)".to_owned());
                return Err(errors);
            };
            let name = &body[..end];
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                errors.push(format!("`${{{name}}}` is not a valid variable reference (use letters, digits and `_`)"));
            } else if let Some(value) = env(name) {
                out.push_str(&value);
            } else {
                errors.push(format!("environment variable `{name}` is not set"));
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution() {
        let env = |k: &str| (k == "A").then(|| "x".to_owned());
        assert_eq!(substitute("${A}-$${A}-$5", &env), Ok("x-${A}-$5".to_owned()));
        assert_eq!(substitute("${B}${C}", &env).map_err(|e| e.len()), Err(2));
        assert!(substitute("${A", &env).is_err());
        assert!(substitute("${}", &env).is_err());
    }
}
