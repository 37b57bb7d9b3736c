//! `key-auth`: a key in a header or the query string names a consumer.

use super::{already_identified, fall_back, identify, skipped_preflight, unauthorized, Consumers, Identity};
use crate::plugins::pipeline::{Access, Ctx, Flow, Plugin, Refusal};
use http::{HeaderName, HeaderValue, Uri};
use percent_encoding::percent_decode_str;
use std::borrow::Cow;
use std::sync::Arc;

/// A compiled `key-auth` config.
pub(crate) struct KeyAuth {
    config: config_sync::model::KeyAuth,
    /// `key_names` as header names (validated to be tokens).
    headers: Vec<HeaderName>,
    consumers: Arc<Consumers>,
}

/// Where a key was found, to hide it.
enum Found {
    Header(HeaderName),
    Query(String),
}

impl KeyAuth {
    pub(crate) fn new(config: &config_sync::model::KeyAuth, consumers: Arc<Consumers>) -> KeyAuth {
        let headers = config.key_names.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect();
        KeyAuth { config: config.clone(), headers, consumers }
    }

    /// The key the request carries, or why there is none to use.
    fn find(&self, ctx: &Ctx<'_>) -> Result<(String, Found), Refusal> {
        for (name, header) in self.config.key_names.iter().zip(&self.headers) {
            if self.config.key_in_header {
                let mut values = ctx.request.headers.get_all(header).iter();
                if let Some(value) = values.next() {
                    if values.next().is_some() {
                        return Err(unauthorized("Duplicate API key found", challenge()));
                    }
                    let key = value.to_str().map_err(|_| invalid())?;
                    return Ok((key.to_owned(), Found::Header(header.clone())));
                }
            }
            if self.config.key_in_query {
                let mut found = query_values(&ctx.request.uri, name);
                if let Some(key) = found.next() {
                    if found.next().is_some() {
                        return Err(unauthorized("Duplicate API key found", challenge()));
                    }
                    return Ok((key.into_owned(), Found::Query(name.clone())));
                }
            }
        }
        Err(unauthorized("No API key found in request", challenge()))
    }
}

impl Plugin for KeyAuth {
    fn access<'a>(&'a self, ctx: &'a mut Ctx<'_>) -> Access<'a> {
        let anonymous = self.config.anonymous.as_deref();
        if skipped_preflight(ctx, self.config.run_on_preflight) || already_identified(ctx, anonymous) {
            return Access::Ready(Flow::Continue);
        }
        let found = self.find(ctx).and_then(|(key, at)| match self.consumers.by_key(&key) {
            Some((consumer, id)) => Ok((consumer.clone(), id.clone(), at)),
            None => Err(invalid()),
        });
        let flow = match found {
            Ok((consumer, id, at)) => {
                if self.config.hide_credentials {
                    match at {
                        Found::Header(name) => {
                            ctx.request.headers.remove(name);
                        }
                        Found::Query(name) => ctx.request.uri = without_query_param(&ctx.request.uri, &name),
                    }
                }
                identify(ctx, Identity { consumer, credential: Some(id) });
                Flow::Continue
            }
            Err(refusal) => fall_back(ctx, &self.consumers, anonymous, refusal),
        };
        Access::Ready(flow)
    }
}

fn challenge() -> HeaderValue {
    HeaderValue::from_static("Key realm=\"gateway\"")
}

fn invalid() -> Refusal {
    unauthorized("Invalid authentication credentials", challenge())
}

/// The values of query parameter `name`, percent-decoded (`+` as a space, as forms write it).
pub(super) fn query_values<'u>(uri: &'u Uri, name: &'u str) -> impl Iterator<Item = Cow<'u, str>> + 'u {
    uri.query().unwrap_or("").split('&').filter_map(move |pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

fn decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let spaced = text.replace('+', " ");
    Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
}

/// `uri` without query parameter `name` (the query goes when it is left empty).
pub(super) fn without_query_param(uri: &Uri, name: &str) -> Uri {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keys_are_found_decoded_and_hidden() {
        let uri: Uri = "/x?a=1&apikey=k%2By&apikey2=z".parse().unwrap();
        assert_eq!(query_values(&uri, "apikey").collect::<Vec<_>>(), ["k+y"]);
        assert_eq!(without_query_param(&uri, "apikey").to_string(), "/x?a=1&apikey2=z");
        let only: Uri = "/x?apikey=k".parse().unwrap();
        assert_eq!(without_query_param(&only, "apikey").to_string(), "/x");
        let plus: Uri = "/x?api%6Bey=a+b".parse().unwrap();
        assert_eq!(query_values(&plus, "apikey").collect::<Vec<_>>(), ["a b"]);
    }
}
