//! Import reports as the front ends page them: the rules of a page of errors, shared by gRPC
//! (`GetImport`) and HTTP (`GET /v1/imports/{id}`).

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
}
