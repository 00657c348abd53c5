//! Import reports as the front ends page them: the rules of a page of errors, shared by gRPC
//! (`GetImport`) and HTTP (`GET /v1/imports/{id}`).

use recoup_proto::v1;

use crate::store::{ImportStore, ListPosition, StoreError};

/// Errors per page of a report when the request names no size.
pub const DEFAULT_ERRORS_PAGE: u32 = 1000;
/// Most errors per page of a report.
pub const MAX_ERRORS_PAGE: u32 = 10_000;

/// A page of a report's errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorsPage {
    /// The sequence of the first error (the page token; 0 is the first page).
    pub from: u64,
    /// Errors in the page.
    pub size: usize,
}

impl ErrorsPage {
    /// The page a request asks for: `errors_page_size` (0: the default) and
    /// `errors_page_token` (empty: the first page). The error names the field.
    pub fn parse(size: u32, token: &str) -> Result<Self, String> {
        let size = match size {
            0 => DEFAULT_ERRORS_PAGE,
            n if n > MAX_ERRORS_PAGE => {
                return Err(format!(
                    "errors_page_size must be at most {MAX_ERRORS_PAGE}, got {n}"
                ));
            }
            n => n,
        } as usize;
        let from = match token {
            "" => 0,
            token => token
                .parse::<u64>()
                .map_err(|_| "errors_page_token is not one this service issued".to_owned())?,
        };
        Ok(Self { from, size })
    }
}

/// Imports per page of the list when the request names no size.
pub const DEFAULT_IMPORTS_PAGE: u32 = 20;
/// Most imports per page of the list.
pub const MAX_IMPORTS_PAGE: u32 = 100;

/// A page of the list of imports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportsPage {
    /// Where the previous page ended; `None` for the first page.
    pub before: Option<ListPosition>,
    pub size: usize,
}

impl ImportsPage {
    /// The page a request asks for: `page_size` (0: the default) and `page_token` (empty: the
    /// first page). The error names the field.
    pub fn parse(size: u32, token: &str) -> Result<Self, String> {
        let size = match size {
            0 => DEFAULT_IMPORTS_PAGE,
            n if n > MAX_IMPORTS_PAGE => {
                return Err(format!(
                    "page_size must be at most {MAX_IMPORTS_PAGE}, got {n}"
                ));
            }
            n => n,
        } as usize;
        let before = match token {
            "" => None,
            token => {
                let position = token
                    .split_once(':')
                    .and_then(|(micros, id)| Some((micros.parse().ok()?, id)))
                    .filter(|(_, id)| !id.is_empty());
                match position {
                    Some((micros, id)) => Some((micros, id.to_owned())),
                    None => return Err("page_token is not one this service issued".to_owned()),
                }
            }
        };
        Ok(Self { before, size })
    }

    /// The token of the page after the one that ended at `last`.
    pub fn token_after(last: &ListPosition) -> String {
        format!("{}:{}", last.0, last.1)
    }
}

/// A page of `tenant`'s imports, the most recent first.
pub fn list_imports(
    store: &ImportStore,
    tenant: &str,
    page: &ImportsPage,
) -> Result<v1::ListImportsResponse, StoreError> {
    let (imports, next) = store.imports(tenant, page.before.as_ref(), page.size)?;
    Ok(v1::ListImportsResponse {
        imports,
        next_page_token: next
            .as_ref()
            .map(ImportsPage::token_after)
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_default_and_refuse_what_was_never_issued() {
        assert_eq!(
            ErrorsPage::parse(0, ""),
            Ok(ErrorsPage {
                from: 0,
                size: 1000
            })
        );
        assert_eq!(
            ErrorsPage::parse(2, "17"),
            Ok(ErrorsPage { from: 17, size: 2 })
        );
        assert!(ErrorsPage::parse(10_001, "").is_err());
        assert!(ErrorsPage::parse(5, "abc").is_err());
    }

    #[test]
    fn pages_of_imports_go_on_where_the_last_ended() {
        assert_eq!(
            ImportsPage::parse(0, ""),
            Ok(ImportsPage {
                before: None,
                size: 20
            })
        );
        let last = (1_700_000_000_000_000, "ab12".to_owned());
        let token = ImportsPage::token_after(&last);
        let next = ImportsPage::parse(5, &token).map(|page| page.before);
        assert_eq!(next, Ok(Some(last)));
        for bad in ["x:ab", "12", "12:", ":ab"] {
            assert!(ImportsPage::parse(5, bad).is_err(), "{bad}");
        }
        assert!(ImportsPage::parse(101, "").is_err());
    }
}
