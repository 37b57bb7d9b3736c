//! Query strings: parameters read percent-decoded (`+` as a space, as forms write them).

use http::Uri;
use percent_encoding::percent_decode_str;
use std::borrow::Cow;

/// The values of query parameter `name`, percent-decoded (`+` as a space, as forms write it).
pub(crate) fn values<'u>(uri: &'u Uri, name: &'u str) -> impl Iterator<Item = Cow<'u, str>> + 'u {
    uri.query().unwrap_or("").split('&').filter_map(move |pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

/// `text` percent-decoded, `+` as a space; borrowed when there is nothing to decode.
pub(crate) fn decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let spaced = text.replace('+', " ");
    Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
}

/// `uri` without query parameter `name` (the query goes when it is left empty).
pub(crate) fn without(uri: &Uri, name: &str) -> Uri {
    let Some(query) = uri.query() else { return uri.clone() };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && decode(pair.split_once('=').map_or(*pair, |(k, _)| k)) != name)
        .collect();
    let path = uri.path();
    let rebuilt = if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) };
    // Made of parts of a valid URI: it parses.
    rebuilt.parse().unwrap_or_else(|_| uri.clone())
}

/// `query` with the values of the parameters named in `secrets` replaced by `REDACTED`, for
/// traces and logs.
pub(crate) fn scrubbed<'q>(query: &'q str, secrets: &[String]) -> Cow<'q, str> {
    let secret = |pair: &str| {
        let name = decode(pair.split_once('=').map_or(pair, |(k, _)| k));
        secrets.iter().any(|s| *s == name)
    };
    if secrets.is_empty() || !query.split('&').any(secret) {
        return Cow::Borrowed(query);
    }
    let pairs: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if secret(pair) => Cow::Owned(format!("{name}=REDACTED")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    Cow::Owned(pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keys_are_found_decoded_and_hidden() {
        let uri: Uri = "/x?a=1&apikey=k%2By&apikey2=z".parse().unwrap();
        assert_eq!(values(&uri, "apikey").collect::<Vec<_>>(), ["k+y"]);
        assert_eq!(without(&uri, "apikey").to_string(), "/x?a=1&apikey2=z");
        let only: Uri = "/x?apikey=k".parse().unwrap();
        assert_eq!(without(&only, "apikey").to_string(), "/x");
        let plus: Uri = "/x?api%6Bey=a+b".parse().unwrap();
        assert_eq!(values(&plus, "apikey").collect::<Vec<_>>(), ["a b"]);
    }

    #[test]
    fn secrets_are_scrubbed() {
        let secrets = ["apikey".to_owned(), "jwt".to_owned()];
        assert_eq!(
            scrubbed("a=1&apikey=k&api%6Bey=k2&jwt=t", &secrets),
            "a=1&apikey=REDACTED&api%6Bey=REDACTED&jwt=REDACTED"
        );
        assert!(matches!(scrubbed("a=1", &secrets), Cow::Borrowed("a=1")));
    }
}
