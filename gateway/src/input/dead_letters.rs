//! The query of `GET /api/v1/dead-letters` (and `legion dead-letter list`).

use legion_proto::v1;
use utoipa::IntoParams;

use super::{page_size, query_map};
use crate::problem::Problem;

/// The query parameters of `GET /api/v1/dead-letters`.
pub const LIST_DEAD_LETTERS_PARAMS: &[&str] = &["function", "limit", "page_token"];

/// Query parameters of `GET /api/v1/dead-letters`. All are optional; an empty value counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListDeadLettersQuery {
    /// Only dead letters of this function (`extension.runner.function`).
    pub function: Option<String>,
    /// Tasks per page, 1 to 1000; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

impl ListDeadLettersQuery {
    /// Collects decoded `name=value` pairs. Errors: an unknown parameter or one given twice.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, Problem> {
        let mut map = query_map(pairs, LIST_DEAD_LETTERS_PARAMS)?;
        Ok(Self { function: map.remove("function"), limit: map.remove("limit"), page_token: map.remove("page_token") })
    }

    /// The gRPC request. Error: a `limit` that is not an integer from 1 to 1000.
    pub fn into_request(self) -> Result<v1::ListDeadLettersRequest, Problem> {
        Ok(v1::ListDeadLettersRequest {
            function: self.function,
            page_size: page_size(self.limit.as_deref())?,
            page_token: self.page_token.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_query_becomes_the_request() {
        let query = ListDeadLettersQuery::from_pairs(pairs(&[
            ("function", "core.util.echo"),
            ("limit", "5"),
            ("page_token", "t"),
        ]))
        .expect("parses");
        assert_eq!(
            query.into_request().expect("valid"),
            v1::ListDeadLettersRequest {
                function: Some("core.util.echo".into()),
                page_size: 5,
                page_token: "t".into()
            }
        );
        let empty = ListDeadLettersQuery::from_pairs(pairs(&[("function", "")])).expect("parses");
        assert_eq!(empty.into_request().expect("valid"), v1::ListDeadLettersRequest::default());
    }

    #[test]
    fn bad_parameters_are_named() {
        let unknown = ListDeadLettersQuery::from_pairs(pairs(&[("status", "failed")])).expect_err("unknown");
        assert!(unknown.detail.starts_with("status: unknown query parameter"), "{}", unknown.detail);
        let twice = ListDeadLettersQuery::from_pairs(pairs(&[("limit", "1"), ("limit", "2")])).expect_err("twice");
        assert_eq!(twice.detail, "limit: given more than once");
        for bad in ["0", "1001", "x"] {
            let query = ListDeadLettersQuery::from_pairs(pairs(&[("limit", bad)])).expect("parses");
            let err = query.into_request().expect_err("out of range");
            assert!(err.detail.starts_with("limit: must be an integer from 1 to 1000"), "{}", err.detail);
        }
    }
}
