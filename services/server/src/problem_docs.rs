//! Completes the generated OpenAPI document with the errors every operation can answer, so
//! the document says what the server does: each operation's annotation lists the errors of
//! its own logic, and this modifier adds those that come from the shared machinery (the
//! extractors of `params`, `extract` and `auth`), following the rules in [`crate::params`]:
//!
//! - a secured operation answers 401 (no, bad or expired credentials);
//! - an operation with query parameters or headers it reads answers 400;
//! - an operation with path parameters answers 404 (an unknown or malformed id);
//! - an operation with a JSON body answers 400 (not JSON), 413, 415 and 422;
//!
//! and every error response (4xx and 5xx) is `application/problem+json` with the
//! [`Problem`](crate::error::Problem) schema.

use utoipa::Modify;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Content, ContentBuilder, Ref, RefOr, ResponseBuilder};

use crate::extract::IDEMPOTENCY_KEY_CHARS_MAX;

/// The media type of every error response.
pub const PROBLEM_MEDIA_TYPE: &str = "application/problem+json";

/// What the `Idempotency-Key` extractor accepts: visible ASCII, at most the key limit.
pub fn idempotency_key_pattern() -> String {
    format!("^[!-~]{{1,{IDEMPOTENCY_KEY_CHARS_MAX}}}$")
}

pub struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in operations_mut(item) {
                add_shared_errors(operation);
                constrain_idempotency_key(operation);
                serve_errors_as_problems(operation);
            }
        }
    }
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

fn has_parameter_in(operation: &Operation, place: ParameterIn) -> bool {
    operation.parameters.iter().flatten().any(|p| matches!(p, RefOr::T(p) if p.parameter_in == place))
}

fn has_json_body(operation: &Operation) -> bool {
    matches!(&operation.request_body, Some(RefOr::T(body)) if body.content.contains_key("application/json"))
}

fn add_shared_errors(operation: &mut Operation) {
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let reads_query_or_headers =
        has_parameter_in(operation, ParameterIn::Query) || has_parameter_in(operation, ParameterIn::Header);
    let json_body = has_json_body(operation);
    let has_path = has_parameter_in(operation, ParameterIn::Path);
    let mut add = |status: &str, description: &str| {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(ResponseBuilder::new().description(description).build()));
    };
    if secured {
        add("401", "Missing, malformed or expired credentials (`unauthorized`)");
    }
    if reads_query_or_headers || json_body {
        add("400", "A malformed query parameter or header, or a body that is not JSON (`invalid_json`)");
    }
    if has_path {
        add("404", "No such resource (an unknown or malformed id)");
    }
    if json_body {
        add("413", "The body is larger than this operation accepts");
        add("415", "The body is not sent as `Content-Type: application/json`");
        add("422", "The JSON body does not fit the request, or a value is refused; `field` names it");
    }
}

fn constrain_idempotency_key(operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        if let RefOr::T(parameter) = parameter
            && parameter.parameter_in == ParameterIn::Header
            && parameter.name.eq_ignore_ascii_case("idempotency-key")
        {
            let schema = ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(IDEMPOTENCY_KEY_CHARS_MAX))
                .pattern(Some(idempotency_key_pattern()));
            parameter.schema = Some(RefOr::T(schema.into()));
        }
    }
}

fn serve_errors_as_problems(operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        let is_error = status.parse::<u16>().is_ok_and(|code| code >= 400);
        if let (true, RefOr::T(response)) = (is_error, response) {
            response.content.clear();
            response.content.insert(PROBLEM_MEDIA_TYPE.to_string(), RefOr::T(problem_content()));
        }
    }
}

fn problem_content() -> Content {
    ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build()
}
