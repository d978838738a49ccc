//! [`shown_url`]: a broker's URL as messages and debug output show it, without its password.

/// `amqp://user:secret@host/` -> `amqp://user:***@host/`; anything else as it is.
pub(crate) fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            shown_url("amqp://bob:s3cr3t@broker:5672/%2f"),
            "amqp://bob:***@broker:5672/%2f"
        );
        assert_eq!(shown_url("amqp://broker/"), "amqp://broker/");
        assert_eq!(shown_url("not a url"), "not a url");
        assert_eq!(shown_url("amqp://a:b@c@host/x"), "amqp://a:***@host/x");
    }
}
