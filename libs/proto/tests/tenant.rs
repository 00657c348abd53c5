//! The tenant a request names, as gRPC metadata and HTTP headers carry it.
#![allow(clippy::unwrap_used)]

use recoup_proto::tenant::named_tenant;

#[test]
fn a_named_tenant_is_checked_and_refusals_say_where() {
    assert_eq!(named_tenant(None, "header"), Ok(None));
    assert_eq!(
        named_tenant(Some(b"acme-eu.1"), "metadata"),
        Ok(Some("acme-eu.1".to_owned()))
    );
    assert_eq!(
        named_tenant(Some("acmé".as_bytes()), "header").unwrap_err(),
        "header x-recoup-tenant must be ASCII"
    );
    assert_eq!(
        named_tenant(Some(b"\xff"), "metadata").unwrap_err(),
        "metadata x-recoup-tenant must be ASCII"
    );
    let spaced = named_tenant(Some(b"a b"), "header").unwrap_err();
    assert!(
        spaced.starts_with("header x-recoup-tenant: tenant may contain only"),
        "{spaced}"
    );
    let long = named_tenant(Some("t".repeat(65).as_bytes()), "header").unwrap_err();
    assert!(long.contains("1 to 64 characters"), "{long}");
}
